//! Scripted test LM (being written).

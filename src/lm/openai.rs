//! OpenAI-compatible chat-completions client (placeholder: being written).

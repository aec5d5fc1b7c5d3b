//! A bit-exact port of the parts of CPython 3.11's `random.Random` that DSPy's
//! optimizers and data loaders use, so that a seed means the same sample and
//! the same shuffle here as in Python.
//!
//! The generator is the standard MT19937 Mersenne Twister; seeding follows
//! CPython's `random_seed` (`init_by_array` over the 32-bit little-endian
//! chunks of `abs(seed)`), and the derived methods follow `Lib/random.py`.

/// Number of 32-bit words in the MT19937 state.
const N: usize = 624;
/// MT19937's middle word offset.
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// Python's `random.Random`, seeded from an integer.
///
/// ```
/// use dspy_rhai::data::PyRandom;
/// let mut rng = PyRandom::new(0);
/// let mut xs: Vec<u32> = (0..10).collect();
/// rng.shuffle(&mut xs); // same order as random.Random(0).shuffle(list(range(10)))
/// ```
#[derive(Clone)]
pub struct PyRandom {
    state: [u32; N],
    index: usize,
}

impl std::fmt::Debug for PyRandom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyRandom")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl PyRandom {
    /// Same as Python's `random.Random(seed)` for an `int` seed; the sign is
    /// ignored, as in CPython.
    pub fn new(seed: i64) -> Self {
        Self::from_u64(seed.unsigned_abs())
    }

    /// Same as `random.Random(seed)` for a non-negative `int` seed.
    pub fn from_u64(seed: u64) -> Self {
        let low = seed as u32;
        let high = (seed >> 32) as u32;
        if high == 0 {
            Self::from_key(&[low])
        } else {
            Self::from_key(&[low, high])
        }
    }

    /// Seeds with MT19937's `init_by_array`, as CPython does with the 32-bit
    /// chunks (least significant first) of the seed's absolute value. An
    /// empty key behaves like `[0]`.
    pub fn from_key(key: &[u32]) -> Self {
        let key: &[u32] = if key.is_empty() { &[0] } else { key };
        let mut rng = Self::init_genrand(19_650_218);
        let mt = &mut rng.state;
        let mut i = 1usize;
        let mut j = 0usize;
        for _ in 0..N.max(key.len()) {
            let prev = mt[i - 1] ^ (mt[i - 1] >> 30);
            mt[i] = (mt[i] ^ prev.wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let prev = mt[i - 1] ^ (mt[i - 1] >> 30);
            mt[i] = (mt[i] ^ prev.wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
        }
        mt[0] = 0x8000_0000;
        rng
    }

    fn init_genrand(seed: u32) -> Self {
        let mut state = [0u32; N];
        state[0] = seed;
        for i in 1..N {
            let prev = state[i - 1] ^ (state[i - 1] >> 30);
            state[i] = 1_812_433_253u32.wrapping_mul(prev).wrapping_add(i as u32);
        }
        Self { state, index: N }
    }

    fn twist(&mut self) {
        let mt = &mut self.state;
        for k in 0..N {
            let y = (mt[k] & UPPER_MASK) | (mt[(k + 1) % N] & LOWER_MASK);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            mt[k] = mt[(k + M) % N] ^ (y >> 1) ^ mag;
        }
        self.index = 0;
    }

    /// The next raw 32-bit output of MT19937 (CPython's `genrand_uint32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// Python's `random()`: a float in `[0, 1)` with 53 random bits.
    pub fn random(&mut self) -> f64 {
        let a = f64::from(self.next_u32() >> 5);
        let b = f64::from(self.next_u32() >> 6);
        (a * 67_108_864.0 + b) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// Python's `getrandbits(k)` for `k <= 64` (larger `k` is not needed by
    /// DSPy and panics).
    pub fn getrandbits(&mut self, k: u32) -> u64 {
        assert!(k <= 64, "getrandbits supports at most 64 bits, got {k}");
        if k == 0 {
            return 0;
        }
        if k <= 32 {
            return u64::from(self.next_u32() >> (32 - k));
        }
        // CPython fills 32-bit words least significant first; only the last
        // word is truncated to the remaining bits.
        let low = u64::from(self.next_u32());
        let high = u64::from(self.next_u32() >> (64 - k));
        low | (high << 32)
    }

    /// CPython's `_randbelow_with_getrandbits(n)`: uniform in `[0, n)` by
    /// rejection sampling on `n.bit_length()` bits. Returns 0 when `n == 0`
    /// (Python would loop forever).
    pub fn randbelow(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let k = u64::BITS - n.leading_zeros();
        loop {
            let r = self.getrandbits(k);
            if r < n {
                return r;
            }
        }
    }

    /// Python's `randint(a, b)`: uniform in `[a, b]`, both ends included.
    ///
    /// # Panics
    /// If `a > b` (Python raises `ValueError`).
    pub fn randint(&mut self, a: i64, b: i64) -> i64 {
        assert!(a <= b, "empty range for randint({a}, {b})");
        let width = (i128::from(b) - i128::from(a) + 1) as u128;
        let offset = if width > u128::from(u64::MAX) {
            // Only randint(i64::MIN, i64::MAX): 2**64 values, so CPython draws
            // 65 bits (three words, the last one shifted down to 1 bit).
            loop {
                let low = self.getrandbits(32);
                let high = self.getrandbits(32);
                if self.getrandbits(1) == 0 {
                    break low | (high << 32);
                }
            }
        } else {
            self.randbelow(width as u64)
        };
        (i128::from(a) + i128::from(offset)) as i64
    }

    /// Python's `shuffle(x)`: Fisher-Yates from the end, exactly as CPython.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.randbelow(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// Python's `choice(seq)`; `None` for an empty slice (Python raises).
    pub fn choice<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            return None;
        }
        let j = self.randbelow(items.len() as u64) as usize;
        items.get(j)
    }

    /// Python 3.11's `sample(population, k)`: `k` distinct positions in
    /// selection order. Like CPython it tracks either a pool (small
    /// populations) or a set of chosen indices (large populations), which
    /// consume random numbers differently.
    ///
    /// # Panics
    /// If `k > population.len()` (Python raises `ValueError`).
    pub fn sample<T: Clone>(&mut self, population: &[T], k: usize) -> Vec<T> {
        let n = population.len();
        assert!(k <= n, "sample larger than population ({k} > {n})");
        let mut setsize = 21usize;
        if k > 5 {
            let exp = ((k as f64 * 3.0).ln() / 4f64.ln()).ceil() as u32;
            setsize = setsize.saturating_add(4usize.saturating_pow(exp));
        }
        let mut result = Vec::with_capacity(k);
        if n <= setsize {
            let mut pool: Vec<usize> = (0..n).collect();
            for i in 0..k {
                let j = self.randbelow((n - i) as u64) as usize;
                result.push(population[pool[j]].clone());
                pool[j] = pool[n - i - 1];
            }
        } else {
            let mut selected = std::collections::HashSet::with_capacity(k);
            for _ in 0..k {
                let mut j = self.randbelow(n as u64) as usize;
                while !selected.insert(j) {
                    j = self.randbelow(n as u64) as usize;
                }
                result.push(population[j].clone());
            }
        }
        result
    }
}

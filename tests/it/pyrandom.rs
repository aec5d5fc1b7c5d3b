//! `PyRandom` against values produced by CPython 3.11's `random.Random`.

use dspy_rhai::data::PyRandom;

/// What CPython gives for one seed; each method starts from a fresh
/// `random.Random(seed)`.
struct Expected {
    seed: i64,
    /// `[r.random() for _ in range(3)]`
    random: [f64; 3],
    /// `[r.getrandbits(k) for k in (1, 7, 32, 33, 64)]`
    bits: [u64; 5],
    /// `x = list(range(10)); r.shuffle(x)`
    shuffle10: [u32; 10],
    /// `x = list(range(100)); r.shuffle(x)`
    shuffle100: [u32; 100],
    /// `r.sample(range(50), 5)`: the set-based branch.
    sample5: [u32; 5],
    /// `r.sample(range(50), 40)`: the pool-based branch.
    sample40: [u32; 40],
    /// `[r.randint(1, 6) for _ in range(5)] + [r.randint(-1000, 10**12)]`
    randint: [i64; 6],
    /// `[r.choice("abcdefg") for _ in range(5)]`
    choice: [char; 5],
}

const CASES: &[Expected] = &[
    Expected {
        seed: 0,
        random: [0.8444218515250481, 0.7579544029403025, 0.420571580830845],
        bits: [1, 49, 3255389356, 3823568514, 4776171008201404212],
        shuffle10: [7, 8, 1, 5, 3, 4, 2, 0, 9, 6],
        shuffle100: [
            23, 8, 11, 7, 48, 13, 1, 91, 94, 54, 16, 63, 52, 41, 80, 2, 47, 87, 78, 66, 19, 6, 24,
            10, 59, 30, 22, 29, 83, 37, 93, 81, 43, 99, 86, 28, 34, 88, 44, 14, 84, 70, 4, 20, 15,
            21, 31, 76, 57, 67, 73, 50, 69, 25, 98, 46, 96, 0, 72, 35, 58, 92, 3, 95, 56, 90, 26,
            40, 55, 89, 75, 71, 60, 42, 9, 82, 39, 18, 77, 68, 32, 79, 12, 85, 36, 17, 64, 27, 74,
            45, 61, 38, 51, 62, 65, 33, 5, 53, 97, 49,
        ],
        sample5: [24, 48, 26, 2, 16],
        sample40: [
            24, 48, 26, 2, 16, 32, 31, 25, 19, 30, 22, 37, 13, 44, 8, 18, 35, 6, 45, 29, 17, 39,
            42, 41, 4, 9, 3, 46, 21, 10, 15, 40, 23, 11, 38, 5, 49, 20, 34, 33,
        ],
        randint: [4, 4, 1, 3, 5, 444468674045],
        choice: ['g', 'd', 'g', 'd', 'a'],
    },
    Expected {
        seed: 1,
        random: [0.13436424411240122, 0.8474337369372327, 0.763774618976614],
        bits: [0, 72, 3639700191, 7740669488, 4705193143269049553],
        shuffle10: [6, 8, 9, 7, 5, 3, 0, 4, 1, 2],
        shuffle100: [
            53, 37, 65, 51, 4, 20, 38, 9, 10, 81, 44, 36, 84, 50, 96, 90, 66, 16, 80, 33, 24, 52,
            91, 99, 64, 5, 58, 76, 39, 79, 23, 94, 30, 73, 25, 47, 31, 45, 19, 87, 42, 68, 95, 21,
            7, 67, 46, 82, 11, 6, 41, 86, 88, 70, 18, 78, 71, 59, 43, 61, 22, 14, 35, 93, 56, 28,
            98, 54, 27, 89, 1, 69, 74, 2, 85, 40, 13, 75, 29, 34, 92, 0, 77, 55, 49, 3, 62, 12, 26,
            48, 83, 60, 57, 63, 15, 32, 8, 97, 72, 17,
        ],
        sample5: [8, 36, 48, 4, 16],
        sample40: [
            8, 36, 4, 16, 7, 31, 28, 30, 41, 24, 13, 6, 44, 1, 40, 27, 0, 43, 17, 23, 25, 45, 18,
            3, 10, 33, 35, 42, 20, 37, 22, 12, 38, 39, 19, 49, 26, 34, 32, 11,
        ],
        randint: [2, 5, 1, 3, 1, 835351531923],
        choice: ['b', 'e', 'g', 'g', 'g'],
    },
    Expected {
        seed: 42,
        random: [
            0.6394267984578837,
            0.025010755222666936,
            0.27502931836911926,
        ],
        bits: [1, 14, 107420369, 3184935163, 4117511471858006928],
        shuffle10: [7, 3, 2, 8, 5, 6, 9, 4, 0, 1],
        shuffle100: [
            42, 41, 91, 9, 65, 50, 1, 70, 15, 78, 73, 10, 55, 56, 72, 45, 48, 92, 76, 37, 30, 21,
            32, 96, 80, 49, 83, 26, 87, 33, 8, 47, 59, 63, 74, 44, 98, 52, 85, 12, 36, 23, 39, 40,
            18, 66, 61, 60, 7, 34, 99, 46, 2, 51, 16, 38, 58, 68, 22, 62, 24, 5, 6, 67, 82, 19, 79,
            43, 90, 20, 0, 95, 57, 93, 53, 89, 25, 71, 84, 77, 64, 29, 27, 88, 97, 4, 54, 75, 11,
            69, 86, 13, 17, 28, 31, 35, 94, 3, 14, 81,
        ],
        sample5: [40, 7, 1, 47, 17],
        sample40: [
            40, 7, 1, 17, 15, 14, 8, 6, 34, 5, 37, 27, 2, 47, 49, 13, 44, 32, 36, 46, 42, 22, 20,
            28, 30, 41, 48, 33, 18, 43, 0, 35, 24, 10, 38, 39, 3, 12, 21, 31,
        ],
        randint: [6, 1, 1, 6, 3, 245864937384],
        choice: ['f', 'a', 'a', 'f', 'c'],
    },
    Expected {
        seed: 1 << 40,
        random: [0.1036394562812375, 0.6705558677439764, 0.4266543913526999],
        bits: [0, 45, 2880015531, 282029048, 7152370301927416456],
        shuffle10: [7, 8, 2, 4, 6, 0, 3, 9, 5, 1],
        shuffle100: [
            59, 98, 39, 55, 20, 69, 79, 93, 66, 14, 35, 17, 23, 83, 10, 2, 3, 77, 96, 32, 41, 56,
            84, 21, 89, 88, 90, 91, 37, 38, 27, 36, 74, 0, 7, 92, 11, 44, 64, 42, 19, 57, 95, 47,
            1, 24, 72, 81, 63, 16, 31, 15, 22, 60, 82, 30, 43, 99, 97, 68, 18, 28, 94, 29, 12, 33,
            65, 73, 61, 75, 67, 58, 53, 76, 78, 25, 87, 26, 4, 46, 62, 52, 5, 34, 48, 40, 70, 50,
            86, 9, 71, 80, 51, 49, 6, 54, 8, 85, 45, 13,
        ],
        sample5: [6, 22, 42, 4, 27],
        sample40: [
            6, 22, 42, 4, 27, 3, 24, 25, 40, 35, 46, 47, 41, 20, 43, 17, 2, 26, 31, 11, 1, 23, 49,
            12, 45, 29, 18, 48, 32, 13, 14, 16, 38, 15, 21, 8, 39, 37, 44, 28,
        ],
        randint: [1, 3, 6, 1, 4, 425410420384],
        choice: ['a', 'c', 'f', 'a', 'd'],
    },
    Expected {
        seed: -7,
        random: [0.32383276483316237, 0.15084917392450192, 0.6509344730398537],
        bits: [0, 121, 647892279, 5990721294, 1336213610742710224],
        shuffle10: [8, 3, 1, 4, 7, 0, 9, 6, 2, 5],
        shuffle100: [
            33, 25, 99, 84, 78, 81, 21, 93, 82, 1, 22, 0, 61, 73, 24, 49, 26, 44, 76, 79, 47, 2,
            51, 38, 14, 48, 10, 32, 16, 94, 65, 69, 42, 59, 88, 98, 66, 91, 57, 29, 20, 87, 34, 60,
            31, 13, 63, 3, 56, 86, 45, 62, 58, 23, 92, 40, 36, 67, 71, 80, 43, 52, 35, 39, 75, 18,
            96, 37, 17, 5, 90, 95, 97, 77, 28, 15, 72, 89, 54, 70, 85, 30, 8, 53, 55, 11, 4, 27,
            64, 7, 74, 46, 12, 68, 9, 6, 83, 50, 19, 41,
        ],
        sample5: [20, 9, 25, 41, 3],
        sample40: [
            20, 9, 25, 41, 3, 4, 34, 6, 23, 37, 45, 32, 13, 2, 5, 27, 26, 44, 15, 36, 17, 40, 1,
            33, 18, 39, 7, 49, 22, 47, 43, 21, 12, 19, 46, 0, 8, 30, 38, 42,
        ],
        randint: [3, 2, 4, 6, 1, 902254242635],
        choice: ['c', 'b', 'd', 'f', 'a'],
    },
];

#[test]
fn matches_cpython_for_each_seed() {
    for case in CASES {
        let fresh = || PyRandom::new(case.seed);
        let seed = case.seed;

        let mut r = fresh();
        let floats: Vec<f64> = (0..3).map(|_| r.random()).collect();
        assert_eq!(floats, case.random, "random() for seed {seed}");

        let mut r = fresh();
        let bits: Vec<u64> = [1, 7, 32, 33, 64]
            .iter()
            .map(|&k| r.getrandbits(k))
            .collect();
        assert_eq!(bits, case.bits, "getrandbits for seed {seed}");

        let mut xs: Vec<u32> = (0..10).collect();
        fresh().shuffle(&mut xs);
        assert_eq!(xs, case.shuffle10, "shuffle(range(10)) for seed {seed}");

        let mut xs: Vec<u32> = (0..100).collect();
        fresh().shuffle(&mut xs);
        assert_eq!(xs, case.shuffle100, "shuffle(range(100)) for seed {seed}");

        let population: Vec<u32> = (0..50).collect();
        assert_eq!(
            fresh().sample(&population, 5),
            case.sample5,
            "sample k=5, seed {seed}"
        );
        assert_eq!(
            fresh().sample(&population, 40),
            case.sample40,
            "sample k=40, seed {seed}"
        );

        let mut r = fresh();
        let mut ints: Vec<i64> = (0..5).map(|_| r.randint(1, 6)).collect();
        ints.push(r.randint(-1000, 1_000_000_000_000));
        assert_eq!(ints, case.randint, "randint for seed {seed}");

        let letters: Vec<char> = "abcdefg".chars().collect();
        let mut r = fresh();
        let picked: Vec<char> = (0..5).map(|_| *r.choice(&letters).unwrap()).collect();
        assert_eq!(picked, case.choice, "choice for seed {seed}");
    }
}

#[test]
fn negative_seed_is_its_absolute_value() {
    let mut a = PyRandom::new(-42);
    let mut b = PyRandom::new(42);
    for _ in 0..10 {
        assert_eq!(a.next_u32(), b.next_u32());
    }
}

#[test]
fn seeds_wider_than_32_bits_and_i64_extremes() {
    // random.Random(2**64 - 1).random(), twice
    let mut r = PyRandom::from_u64(u64::MAX);
    assert_eq!(
        [r.random(), r.random()],
        [0.021825695401270107, 0.3380953268613758]
    );
    // random.Random(3).randint(-2**63, 2**63 - 1), three times (65-bit draws)
    let mut r = PyRandom::new(3);
    let full: Vec<i64> = (0..3).map(|_| r.randint(i64::MIN, i64::MAX)).collect();
    assert_eq!(
        full,
        [915533473134040693, 1680490732736907042, 5166499419593367711]
    );
    // random.Random(5).randint(0, 2**33), three times (34-bit draws)
    let mut r = PyRandom::new(5);
    let mixed: Vec<i64> = (0..3).map(|_| r.randint(0, 1 << 33)).collect();
    assert_eq!(mixed, [6970309701, 7480918169, 4051686260]);
}

#[test]
fn edge_cases_do_not_panic() {
    let mut r = PyRandom::new(0);
    assert_eq!(r.choice::<u8>(&[]), None);
    assert_eq!(r.randbelow(1), 0);
    assert_eq!(r.getrandbits(0), 0);
    assert!(r.sample::<u8>(&[], 0).is_empty());
    let mut empty: [u8; 0] = [];
    r.shuffle(&mut empty);
    let mut one = [7];
    r.shuffle(&mut one);
    assert_eq!(one, [7]);
}

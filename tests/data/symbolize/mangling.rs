// Source for the Rust demangling tests: compiled with -C symbol-mangling-version=v0
// and =legacy, its symbols are demangled and compared against c++filt.
// Covers generics, closures, trait and inherent impls, dyn traits, references, raw
// pointers, arrays, slices, tuples, fn pointers, const generics and a non-ASCII name.
#![allow(dead_code)]
#![allow(non_snake_case)]

use std::collections::HashMap;
use std::fmt::Debug;

pub struct Wrapper<T> {
    inner: T,
}

impl<T: Debug> Wrapper<T> {
    #[inline(never)]
    pub fn show(&self) -> String {
        format!("{:?}", self.inner)
    }
}

pub trait Shape {
    fn area(&self) -> f64;
}

pub struct Square(f64);

impl Shape for Square {
    #[inline(never)]
    fn area(&self) -> f64 {
        self.0 * self.0
    }
}

impl<T: Debug> Shape for Wrapper<T> {
    #[inline(never)]
    fn area(&self) -> f64 {
        self.show().len() as f64
    }
}

pub mod inner {
    pub mod deeper {
        #[inline(never)]
        pub fn leaf(x: &mut [u32; 4]) -> u32 {
            x.iter().sum()
        }
    }
}

#[inline(never)]
pub fn const_generic<const N: usize>(a: [u8; N]) -> usize {
    a.len()
}

#[inline(never)]
pub fn signed_const<const N: i32>() -> i32 {
    N * 2
}

#[inline(never)]
pub fn bool_const<const B: bool>() -> bool {
    !B
}

#[inline(never)]
pub fn char_const<const C: char>() -> char {
    C
}

#[inline(never)]
pub fn takes_fn(f: fn(&str, u64) -> Option<i16>, s: &str) -> Option<i16> {
    f(s, 3)
}

#[inline(never)]
pub fn takes_dyn(s: &dyn Shape) -> f64 {
    s.area()
}

#[inline(never)]
pub fn takes_dyn_iter(it: &mut dyn Iterator<Item = (u8, char)>) -> usize {
    it.count()
}

#[inline(never)]
pub fn ptrs(a: *const i8, b: *mut u16, c: &[i64], d: (bool, f32)) -> usize {
    (a as usize) ^ (b as usize) ^ c.len() ^ (d.0 as usize)
}

#[inline(never)]
pub fn grüße(n: u128) -> i128 {
    n as i128 - 1
}

#[inline(never)]
pub fn generic<A: Debug, B: Clone + Debug>(a: A, b: &B) -> String {
    format!("{:?}{:?}", a, b.clone())
}

#[inline(never)]
fn parse_opt(s: &str, n: u64) -> Option<i16> {
    s.parse::<i16>().ok().map(|v| v + n as i16)
}

fn main() {
    let w = Wrapper { inner: vec![1u8, 2, 3] };
    let w2 = Wrapper { inner: ("a", 1.5f32) };
    let mut m: HashMap<String, Vec<Box<dyn Shape>>> = HashMap::new();
    m.entry("sq".to_string()).or_default().push(Box::new(Square(2.0)));
    m.entry("w".to_string()).or_default().push(Box::new(Wrapper { inner: 5i64 }));
    let mut total = 0.0;
    for v in m.values() {
        for s in v {
            total += takes_dyn(s.as_ref());
        }
    }
    let mut arr = [1u32, 2, 3, 4];
    let mut closure = |x: u32| x + inner::deeper::leaf(&mut arr);
    let c = closure(3);
    let mut it = vec![(1u8, 'x'), (2u8, 'y')].into_iter();
    let n = takes_dyn_iter(&mut it);
    let s = generic(w.show(), &w2.show());
    let k = const_generic([0u8; 7]) + const_generic([1u8; 300]);
    let sc = signed_const::<-5>() + signed_const::<1000>();
    let bc = bool_const::<true>();
    let cc = char_const::<'λ'>();
    let f = takes_fn(parse_opt, "12");
    let p = ptrs(std::ptr::null(), std::ptr::null_mut(), &[1, 2], (true, 1.0));
    let g = grüße(7);
    let sorted: Vec<i32> = {
        let mut v = vec![3, 1, 2];
        v.sort_by(|a, b| b.cmp(a));
        v
    };
    println!("{total} {c} {n} {s} {k} {sc} {bc} {cc} {f:?} {p} {g} {sorted:?} {}", w2.area());
}

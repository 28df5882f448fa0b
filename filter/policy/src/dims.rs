//! The three dimensions a rate limit counts — requests, input tokens, output tokens — and
//! [`Dims`], one value per dimension.
//!
//! Limits, costs, what a window holds, the rate-limit headers: everything the limiter handles
//! comes in threes. [`Dims`] is a `Copy` array of three indexed by [`Dim`], so it costs what
//! the bare array did (no allocation, no indirection) and the dimension is always named.

use std::ops::{Index, IndexMut};

/// What is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dim {
    /// Requests (counted in thousandths in a window, see [`crate::limits::REQUEST_SCALE`]).
    Requests = 0,
    /// Input tokens.
    InputTokens = 1,
    /// Output tokens.
    OutputTokens = 2,
}

impl Dim {
    /// All dimensions, in [`Dims`] order.
    pub const ALL: [Dim; 3] = [Dim::Requests, Dim::InputTokens, Dim::OutputTokens];

    /// The `x-ratelimit-limit-*` header of the dimension.
    pub const fn limit_header(self) -> &'static str {
        match self {
            Dim::Requests => "x-ratelimit-limit-requests",
            Dim::InputTokens => "x-ratelimit-limit-input-tokens",
            Dim::OutputTokens => "x-ratelimit-limit-output-tokens",
        }
    }

    /// The `x-ratelimit-remaining-*` header of the dimension.
    pub const fn remaining_header(self) -> &'static str {
        match self {
            Dim::Requests => "x-ratelimit-remaining-requests",
            Dim::InputTokens => "x-ratelimit-remaining-input-tokens",
            Dim::OutputTokens => "x-ratelimit-remaining-output-tokens",
        }
    }

    /// The `x-ratelimit-reset-*` header of the dimension.
    pub const fn reset_header(self) -> &'static str {
        match self {
            Dim::Requests => "x-ratelimit-reset-requests",
            Dim::InputTokens => "x-ratelimit-reset-input-tokens",
            Dim::OutputTokens => "x-ratelimit-reset-output-tokens",
        }
    }

    /// What the dimension counts, in words (`input tokens`).
    pub const fn words(self) -> &'static str {
        match self {
            Dim::Requests => "requests",
            Dim::InputTokens => "input tokens",
            Dim::OutputTokens => "output tokens",
        }
    }
}

/// One value per [`Dim`]: requests, input tokens, output tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Dims<T>([T; 3]);

impl<T> Dims<T> {
    /// The values for requests, input tokens and output tokens.
    #[inline]
    pub const fn new(requests: T, input_tokens: T, output_tokens: T) -> Self {
        Self([requests, input_tokens, output_tokens])
    }

    /// Each dimension's value from `f`.
    #[inline]
    pub fn from_fn(mut f: impl FnMut(Dim) -> T) -> Self {
        Self(Dim::ALL.map(&mut f))
    }

    /// `f` of each value.
    #[inline]
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Dims<U> {
        Dims(self.0.map(f))
    }

    /// `f` of each dimension and its value.
    #[inline]
    pub fn map_with_dim<U>(self, mut f: impl FnMut(Dim, T) -> U) -> Dims<U> {
        let [r, i, o] = self.0;
        Dims([f(Dim::Requests, r), f(Dim::InputTokens, i), f(Dim::OutputTokens, o)])
    }

    /// Pairs each value with `other`'s for the same dimension.
    #[inline]
    pub fn zip<U>(self, other: Dims<U>) -> Dims<(T, U)> {
        let ([a, b, c], [x, y, z]) = (self.0, other.0);
        Dims([(a, x), (b, y), (c, z)])
    }

    /// Each dimension with a reference to its value, in [`Dim::ALL`] order.
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = (Dim, &T)> {
        Dim::ALL.into_iter().zip(self.0.iter())
    }

    /// Each dimension with a mutable reference to its value.
    #[inline]
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Dim, &mut T)> {
        Dim::ALL.into_iter().zip(self.0.iter_mut())
    }

    /// Whether `f` holds for every value.
    #[inline]
    pub fn all(&self, f: impl FnMut(&T) -> bool) -> bool {
        self.0.iter().all(f)
    }

    /// Whether `f` holds for some value.
    #[inline]
    pub fn any(&self, f: impl FnMut(&T) -> bool) -> bool {
        self.0.iter().any(f)
    }

    /// The values as an array, in [`Dim::ALL`] order.
    #[inline]
    pub fn into_array(self) -> [T; 3] {
        self.0
    }
}

impl<T: Copy> Dims<T> {
    /// `value` in every dimension.
    #[inline]
    pub const fn splat(value: T) -> Self {
        Self([value; 3])
    }
}

impl<T> Index<Dim> for Dims<T> {
    type Output = T;

    #[inline]
    fn index(&self, dim: Dim) -> &T {
        // In range by construction: a `Dim` is 0, 1 or 2.
        &self.0[dim as usize]
    }
}

impl<T> IndexMut<Dim> for Dims<T> {
    #[inline]
    fn index_mut(&mut self, dim: Dim) -> &mut T {
        &mut self.0[dim as usize]
    }
}

impl<T> From<[T; 3]> for Dims<T> {
    #[inline]
    fn from(values: [T; 3]) -> Self {
        Self(values)
    }
}

impl<T> From<Dims<T>> for [T; 3] {
    #[inline]
    fn from(d: Dims<T>) -> Self {
        d.0
    }
}

impl<T> IntoIterator for Dims<T> {
    type Item = (Dim, T);
    type IntoIter = std::iter::Zip<std::array::IntoIter<Dim, 3>, std::array::IntoIter<T, 3>>;

    /// Each dimension with its value, in [`Dim::ALL`] order.
    #[inline]
    fn into_iter(self) -> Self::IntoIter {
        Dim::ALL.into_iter().zip(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_follow_their_dimension() {
        let d = Dims::new(1u64, 20, 300);
        assert_eq!((d[Dim::Requests], d[Dim::InputTokens], d[Dim::OutputTokens]), (1, 20, 300));
        assert_eq!(d.map(|v| v * 2), Dims::new(2, 40, 600));
        assert_eq!(d.map_with_dim(|dim, v| (dim, v))[Dim::InputTokens], (Dim::InputTokens, 20));
        assert_eq!(d.zip(Dims::new('a', 'b', 'c'))[Dim::OutputTokens], (300, 'c'));
        assert_eq!(Dims::from_fn(|dim| dim as u8), Dims::new(0, 1, 2));
        let pairs: Vec<(Dim, u64)> = d.into_iter().collect();
        assert_eq!(pairs, [(Dim::Requests, 1), (Dim::InputTokens, 20), (Dim::OutputTokens, 300)]);
        assert_eq!(d.iter().map(|(dim, v)| (dim, *v)).collect::<Vec<_>>(), pairs);
        let mut m = d;
        m[Dim::InputTokens] = 7;
        for (dim, v) in m.iter_mut() {
            if dim == Dim::Requests {
                *v = 0;
            }
        }
        assert_eq!(<[u64; 3]>::from(m), [0, 7, 300]);
        assert_eq!(Dims::from([0, 7, 300]), m);
        assert!(Dims::splat(None::<u64>).all(Option::is_none));
        assert!(Dims::new(None, Some(1), None).any(Option::is_some));
        assert_eq!(Dims::<u64>::default(), Dims::splat(0));
    }

    #[test]
    fn names() {
        for d in Dim::ALL {
            let suffix = d.words().replace(' ', "-");
            assert_eq!(d.limit_header(), format!("x-ratelimit-limit-{suffix}"));
            assert_eq!(d.remaining_header(), format!("x-ratelimit-remaining-{suffix}"));
            assert_eq!(d.reset_header(), format!("x-ratelimit-reset-{suffix}"));
        }
        assert_eq!(Dim::ALL.map(Dim::words), ["requests", "input tokens", "output tokens"]);
    }
}

//! Compact storage for correlation window state (used by [`crate::detect`]).
//!
//! One million active group keys must fit in well under 200 MB, so a group is
//! a 72-byte slab entry plus a few small heap buffers:
//! - [`GroupMap`]: the groups of one correlation in a slab (`Vec<Group>`),
//!   found through an open-addressing index of 8-byte slots keyed by the
//!   64-bit group hash (no second hashing, no per-entry key copy);
//! - [`Times`]: the (time, aux) pairs of a group's open events, 8 bytes each
//!   while times are whole seconds and aux fits 32 bits (CloudTrail and
//!   EventBridge times are whole seconds; event_count and temporal aux values
//!   are tiny), else 16 bytes with millisecond times and 64-bit aux (value
//!   hashes of value_count) behind one more box;
//! - the group's *blob*: display values (only for correlations decided at
//!   window close; monotone ones take them from the firing event) and up to
//!   ten sample event ids, canonical UUIDs packed as 16 bytes;
//! - the dedup and spent-window marks, boxed, only once a group has fired.

/// A (time, aux) pair in one of the two encodings of [`Times`].
pub(crate) trait Pair: Copy {
    fn t(self) -> i64;
    fn aux(self) -> u64;
    fn pack(t: i64, aux: u64) -> Option<Self>;
}

/// Whole seconds since the epoch in the high 32 bits, aux in the low 32: the
/// integer order is the time order.
impl Pair for u64 {
    #[inline]
    fn t(self) -> i64 {
        (self >> 32) as i64 * 1000
    }
    #[inline]
    fn aux(self) -> u64 {
        self & 0xffff_ffff
    }
    #[inline]
    fn pack(t: i64, aux: u64) -> Option<u64> {
        let secs = t / 1000;
        (t % 1000 == 0 && (0..=i64::from(u32::MAX)).contains(&secs) && aux <= 0xffff_ffff)
            .then_some(((secs as u64) << 32) | aux)
    }
}

impl Pair for (i64, u64) {
    #[inline]
    fn t(self) -> i64 {
        self.0
    }
    #[inline]
    fn aux(self) -> u64 {
        self.1
    }
    #[inline]
    fn pack(t: i64, aux: u64) -> Option<Self> {
        Some((t, aux))
    }
}

/// A group's open events, sorted by time (arrival order among equal times).
/// The wide form is boxed so that the enum stays 24 bytes (it fits beside
/// the compact Vec's niche).
#[derive(Debug, Clone)]
#[allow(clippy::box_collection)] // the box is the point: it keeps the enum at 24 bytes
pub(crate) enum Times {
    Secs(Vec<u64>),
    Ms(Box<Vec<(i64, u64)>>),
}

/// Calls `$body` with `$v` bound to the slice of whichever encoding `$times` uses.
macro_rules! with_pairs {
    ($times:expr, $v:ident => $body:expr) => {
        match $times {
            Times::Secs($v) => $body,
            Times::Ms($v) => $body,
        }
    };
}
pub(crate) use with_pairs;

impl Times {
    /// Starts compact when the aux values fit 32 bits (not value hashes).
    pub(crate) fn new(wide_aux: bool) -> Times {
        if wide_aux {
            Times::Ms(Box::default())
        } else {
            Times::Secs(Vec::new())
        }
    }

    pub(crate) fn from_pairs(pairs: &[(i64, u64)]) -> Times {
        match pairs.iter().map(|&(t, a)| u64::pack(t, a)).collect::<Option<Vec<u64>>>() {
            Some(v) => Times::Secs(v),
            None => Times::Ms(Box::new(pairs.to_vec())),
        }
    }

    pub(crate) fn to_pairs(&self) -> Vec<(i64, u64)> {
        with_pairs!(self, v => v.iter().map(|p| (p.t(), p.aux())).collect())
    }

    pub(crate) fn first_time(&self) -> Option<i64> {
        with_pairs!(self, v => v.first().map(|p| p.t()))
    }

    pub(crate) fn time_at(&self, i: usize) -> i64 {
        with_pairs!(self, v => v[i].t())
    }

    /// Number of pairs with time `<= t`.
    pub(crate) fn count_le(&self, t: i64) -> usize {
        with_pairs!(self, v => v.partition_point(|p| p.t() <= t))
    }

    /// Number of pairs with time `< t`.
    pub(crate) fn count_lt(&self, t: i64) -> usize {
        with_pairs!(self, v => v.partition_point(|p| p.t() < t))
    }

    /// Inserts after every pair at or before `t`; returns the position.
    pub(crate) fn insert(&mut self, t: i64, aux: u64) -> usize {
        if let Times::Secs(v) = self {
            match u64::pack(t, aux) {
                Some(p) => return insert_sorted(v, t, p),
                // A millisecond time or a wide aux: this group switches to
                // the wide encoding for good.
                None => *self = Times::Ms(Box::new(v.iter().map(|p| (p.t(), p.aux())).collect())),
            }
        }
        match self {
            Times::Ms(v) => insert_sorted(v, t, (t, aux)),
            Times::Secs(_) => unreachable!("converted above"),
        }
    }

    /// Drops the first `n` pairs (and spare capacity once mostly empty).
    pub(crate) fn drain_front(&mut self, n: usize) {
        with_pairs!(self, v => {
            v.drain(..n);
            if v.is_empty() {
                v.shrink_to_fit();
            } else if v.capacity() > 8 && v.len() * 4 < v.capacity() {
                v.shrink_to(v.len() * 2);
            }
        })
    }
}

fn insert_sorted<P: Pair>(v: &mut Vec<P>, t: i64, p: P) -> usize {
    let at = v.partition_point(|x| x.t() <= t);
    if v.capacity() == 0 {
        // Most groups hold one event: no room for four.
        v.reserve_exact(1);
    }
    v.insert(at, p);
    at
}

/// Whether a group has fired, and its dedup state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fired {
    /// Events at or before this time belong to a window that already fired.
    pub until: i64,
    pub dedup_bucket: i64,
    pub dedup_count: u64,
}

/// The window state of one group key.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub key: u64,
    pub last_seen: i64,
    pub times: Times,
    /// See [`blob`]: display values (if kept) and sample event ids.
    pub blob: Vec<u8>,
    pub fired: Option<Box<Fired>>,
}

impl Group {
    pub(crate) fn new(key: u64, last_seen: i64, wide_aux: bool, values: Option<&[&str]>) -> Group {
        Group {
            key,
            last_seen,
            times: Times::new(wide_aux),
            blob: values.map(blob::with_values).unwrap_or_default(),
            fired: None,
        }
    }
}

/// A group's display values and sample event ids in one byte buffer:
/// `[first ids: u8][last ids: u8][varint value count]([varint len][bytes])*`
/// then the ids in order, each `[varint 0][16-byte UUID]` or
/// `[varint len + 1][bytes]`. Empty = no values, no ids.
pub(crate) mod blob {
    /// Ids kept from the start, and from the end, of a window.
    pub const SAMPLE: u8 = 5;

    fn put_varint(b: &mut Vec<u8>, mut n: usize) {
        while n >= 0x80 {
            b.push((n as u8) | 0x80);
            n >>= 7;
        }
        b.push(n as u8);
    }

    fn get_varint(b: &[u8], at: &mut usize) -> usize {
        let (mut n, mut shift) = (0usize, 0);
        loop {
            let byte = b[*at];
            *at += 1;
            n |= usize::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return n;
            }
            shift += 7;
        }
    }

    pub fn with_values(values: &[&str]) -> Vec<u8> {
        let mut b = Vec::with_capacity(3 + values.iter().map(|v| v.len() + 2).sum::<usize>());
        b.extend([0, 0]);
        put_varint(&mut b, values.len());
        for v in values {
            put_varint(&mut b, v.len());
            b.extend_from_slice(v.as_bytes());
        }
        b
    }

    /// Offset just past the values.
    fn values_end(b: &[u8]) -> usize {
        if b.is_empty() {
            return 0;
        }
        let mut at = 2;
        let n = get_varint(b, &mut at);
        for _ in 0..n {
            let len = get_varint(b, &mut at);
            at += len;
        }
        at
    }

    pub fn values(b: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        if b.is_empty() {
            return out;
        }
        let mut at = 2;
        let n = get_varint(b, &mut at);
        for _ in 0..n {
            let len = get_varint(b, &mut at);
            out.push(String::from_utf8_lossy(&b[at..at + len]).into_owned());
            at += len;
        }
        out
    }

    fn id_end(b: &[u8], mut at: usize) -> usize {
        match get_varint(b, &mut at) {
            0 => at + 16,
            n => at + n - 1,
        }
    }

    /// Sample ids: the first five, then the last five, since the last firing.
    pub fn ids(b: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        if b.is_empty() {
            return out;
        }
        let mut at = values_end(b);
        while at < b.len() {
            let mut p = at;
            match get_varint(b, &mut p) {
                0 => out.push(format_uuid(&b[p..p + 16])),
                n => out.push(String::from_utf8_lossy(&b[p..p + n - 1]).into_owned()),
            }
            at = id_end(b, at);
        }
        out
    }

    pub fn push_id(b: &mut Vec<u8>, id: &str) {
        let uuid = parse_uuid(id);
        let need = if uuid.is_some() { 17 } else { id.len() + 3 };
        if b.is_empty() {
            b.reserve_exact(3 + need);
            b.extend([0, 0, 0]);
        } else if b[0] == 0 {
            // The first id of a group that keeps values: most groups stay
            // this size, so no doubling.
            b.reserve_exact(need);
        }
        if b[0] < SAMPLE {
            b[0] += 1;
        } else {
            if b[1] == SAMPLE {
                // Drop the oldest of the last five.
                let mut at = values_end(b);
                for _ in 0..b[0] {
                    at = id_end(b, at);
                }
                let end = id_end(b, at);
                b.drain(at..end);
                b[1] -= 1;
            }
            b[1] += 1;
        }
        match uuid {
            Some(u) => {
                b.push(0);
                b.extend_from_slice(&u);
            }
            None => {
                put_varint(b, id.len() + 1);
                b.extend_from_slice(id.as_bytes());
            }
        }
    }

    /// Forgets the sample ids (the window fired or closed); frees the buffer
    /// when no values are kept.
    pub fn clear_ids(b: &mut Vec<u8>) {
        if b.is_empty() {
            return;
        }
        let end = values_end(b);
        if end == 3 {
            *b = Vec::new();
        } else {
            b.truncate(end);
            b[0] = 0;
            b[1] = 0;
        }
    }

    /// A canonical lower-case UUID (`8-4-4-4-12` hex), the form CloudTrail
    /// and EventBridge ids take; anything else is kept as text, so the id
    /// always reads back exactly as it came.
    fn parse_uuid(s: &str) -> Option<[u8; 16]> {
        let b = s.as_bytes();
        if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
            return None;
        }
        let mut out = [0u8; 16];
        let mut n = 0;
        let mut hi: Option<u8> = None;
        for (i, &c) in b.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                continue;
            }
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                _ => return None,
            };
            match hi.take() {
                None => hi = Some(d),
                Some(h) => {
                    out[n] = (h << 4) | d;
                    n += 1;
                }
            }
        }
        Some(out)
    }

    fn format_uuid(u: &[u8]) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(36);
        for (i, byte) in u.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                s.push('-');
            }
            s.push(HEX[usize::from(byte >> 4)] as char);
            s.push(HEX[usize::from(byte & 15)] as char);
        }
        s
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn uuids_round_trip_and_other_ids_stay_text() {
            let u = "8a8844ff-dc95-4ef5-87d2-d86cc23fedd0";
            assert_eq!(format_uuid(&parse_uuid(u).unwrap()), u);
            assert!(parse_uuid("8A8844FF-DC95-4EF5-87D2-D86CC23FEDD0").is_none(), "upper case is kept as text");
            assert!(parse_uuid("8a8844ff-dc95-4ef5-87d2-d86cc23fedd").is_none());
            let mut b = Vec::new();
            for id in [u, "e1", "8A8844FF-DC95-4EF5-87D2-D86CC23FEDD0", ""] {
                push_id(&mut b, id);
            }
            assert_eq!(ids(&b), vec![u, "e1", "8A8844FF-DC95-4EF5-87D2-D86CC23FEDD0", ""]);
        }

        #[test]
        fn keeps_first_and_last_five_after_values() {
            let mut b = with_values(&["arn:aws:iam::1:user/a", ""]);
            for i in 0..23 {
                push_id(&mut b, &format!("id-{i}{}", "x".repeat(i * 7)));
            }
            let got = ids(&b);
            let want: Vec<String> =
                [0, 1, 2, 3, 4, 18, 19, 20, 21, 22].iter().map(|i| format!("id-{i}{}", "x".repeat(i * 7))).collect();
            assert_eq!(got, want);
            assert_eq!(values(&b), vec!["arn:aws:iam::1:user/a", ""]);
            clear_ids(&mut b);
            assert!(ids(&b).is_empty());
            assert_eq!(values(&b), vec!["arn:aws:iam::1:user/a", ""]);
            let mut c = Vec::new();
            push_id(&mut c, "x");
            clear_ids(&mut c);
            assert_eq!(c.capacity(), 0, "freed when no values are kept");
        }
    }
}

/// The groups of one correlation: a slab plus an open-addressing index
/// (linear probing, at most 3/4 full, backward-shift deletion). A slot is
/// `0` (empty) or `(key >> 32) << 32 | (slab index + 1)`.
#[derive(Debug, Clone, Default)]
pub(crate) struct GroupMap {
    slots: Vec<u64>,
    groups: Vec<Group>,
    /// No group's `last_seen` is older than this (a lower bound): lets
    /// `retain_seen_since` skip scans that cannot remove anything.
    min_seen: i64,
}

impl GroupMap {
    pub(crate) fn len(&self) -> usize {
        self.groups.len()
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, Group> {
        self.groups.iter()
    }

    #[inline]
    fn home(&self, key: u64) -> usize {
        // Fibonacci hashing: the top bits of key * 2^64/phi.
        let bits = self.slots.len().trailing_zeros();
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize
    }

    /// Slot position holding `key`, if present.
    fn find_slot(&self, key: u64) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let tag = key >> 32;
        let mut i = self.home(key);
        loop {
            let s = self.slots[i];
            if s == 0 {
                return None;
            }
            if s >> 32 == tag && self.groups[(s as u32 - 1) as usize].key == key {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Slab index of `key`.
    #[inline]
    pub(crate) fn index_of(&self, key: u64) -> Option<usize> {
        self.find_slot(key).map(|i| (self.slots[i] as u32 - 1) as usize)
    }

    pub(crate) fn get(&self, key: u64) -> Option<&Group> {
        self.index_of(key).map(|i| &self.groups[i])
    }

    pub(crate) fn get_mut(&mut self, key: u64) -> Option<&mut Group> {
        self.index_of(key).map(|i| &mut self.groups[i])
    }

    pub(crate) fn at_mut(&mut self, idx: usize) -> &mut Group {
        &mut self.groups[idx]
    }

    fn place(&mut self, key: u64, idx: usize) {
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        while self.slots[i] != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = ((key >> 32) << 32) | (idx as u64 + 1);
    }

    fn rebuild(&mut self, slots: usize) {
        self.slots = vec![0; slots];
        for idx in 0..self.groups.len() {
            self.place(self.groups[idx].key, idx);
        }
    }

    /// Adds a group whose key is not present; returns its slab index.
    pub(crate) fn insert_new(&mut self, g: Group) -> usize {
        debug_assert!(self.find_slot(g.key).is_none());
        assert!(self.groups.len() < u32::MAX as usize - 1, "too many window groups for one correlation");
        if (self.groups.len() + 1) * 4 > self.slots.len() * 3 {
            self.rebuild((self.slots.len() * 2).max(16));
        }
        if self.groups.is_empty() || g.last_seen < self.min_seen {
            self.min_seen = g.last_seen;
        }
        let idx = self.groups.len();
        let key = g.key;
        self.groups.push(g);
        self.place(key, idx);
        idx
    }

    /// Removes `key`; the last slab entry moves into its place.
    pub(crate) fn remove(&mut self, key: u64) -> Option<Group> {
        let slot = self.find_slot(key)?;
        let idx = (self.slots[slot] as u32 - 1) as usize;
        self.delete_slot(slot);
        let last = self.groups.len() - 1;
        if idx != last {
            let moved = self.groups[last].key;
            let s = self.find_slot(moved).expect("every group has a slot");
            self.slots[s] = (self.slots[s] & !0xffff_ffff) | (idx as u64 + 1);
        }
        Some(self.groups.swap_remove(idx))
    }

    fn delete_slot(&mut self, mut hole: usize) {
        let mask = self.slots.len() - 1;
        self.slots[hole] = 0;
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let s = self.slots[j];
            if s == 0 {
                return;
            }
            let home = self.home(self.groups[(s as u32 - 1) as usize].key);
            // Move s back into the hole unless its home lies cyclically in (hole, j].
            let stays = if hole <= j { hole < home && home <= j } else { hole < home || home <= j };
            if !stays {
                self.slots[hole] = s;
                self.slots[j] = 0;
                hole = j;
            }
        }
    }

    /// Keeps the groups seen at or after `since`.
    pub(crate) fn retain_seen_since(&mut self, since: i64) {
        if self.groups.is_empty() || self.min_seen >= since {
            return;
        }
        let old: Vec<u64> = self.groups.iter().filter(|g| g.last_seen < since).map(|g| g.key).collect();
        for k in old {
            self.remove(k);
        }
        self.min_seen = self.groups.iter().map(|g| g.last_seen).min().unwrap_or(i64::MAX);
        if self.slots.len() > 64 && self.groups.len() * 8 < self.slots.len() {
            self.groups.shrink_to(self.groups.len() * 2);
            self.rebuild((self.groups.len() * 2).next_power_of_two().max(16));
        }
    }

    pub(crate) fn clear(&mut self) {
        *self = GroupMap::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_inserts_finds_and_removes_under_collisions() {
        let mut m = GroupMap::default();
        // Keys sharing the top 32 bits (same tag) and many sharing a home.
        let keys: Vec<u64> = (0..3000u64).map(|i| (7 << 32) | (i * 0x9e37)).chain((0..3000).map(|i| i << 40)).collect();
        for (n, &k) in keys.iter().enumerate() {
            assert!(m.index_of(k).is_none());
            m.insert_new(Group::new(k, n as i64, false, None));
        }
        for (n, &k) in keys.iter().enumerate() {
            assert_eq!(m.get(k).map(|g| g.last_seen), Some(n as i64));
        }
        for &k in keys.iter().step_by(3) {
            assert!(m.remove(k).is_some());
            assert!(m.remove(k).is_none());
        }
        for (n, &k) in keys.iter().enumerate() {
            assert_eq!(m.get(k).is_some(), n % 3 != 0, "key {n}");
        }
        m.retain_seen_since(4000);
        assert_eq!(m.len(), keys.iter().enumerate().filter(|(n, _)| n % 3 != 0 && *n >= 4000).count());
        for (n, &k) in keys.iter().enumerate() {
            assert_eq!(m.get(k).is_some(), n % 3 != 0 && n >= 4000, "key {n}");
        }
    }

    #[test]
    fn slab_entries_stay_small() {
        assert!(std::mem::size_of::<Times>() <= 24);
        assert!(std::mem::size_of::<Group>() <= 72, "{}", std::mem::size_of::<Group>());
    }

    #[test]
    fn times_switch_to_milliseconds_when_needed() {
        let mut t = Times::new(false);
        assert_eq!(t.insert(2000, 1), 0);
        assert_eq!(t.insert(1000, 0), 0);
        assert!(matches!(t, Times::Secs(_)));
        assert_eq!(t.insert(1500, 2), 1);
        assert!(matches!(t, Times::Ms(_)));
        assert_eq!(t.to_pairs(), vec![(1000, 0), (1500, 2), (2000, 1)]);
        assert!(matches!(Times::from_pairs(&[(1000, 0), (5000, 7)]), Times::Secs(_)));
        assert!(matches!(Times::from_pairs(&[(-1000, 0)]), Times::Ms(_)));
        assert!(matches!(Times::from_pairs(&[(1000, 1 << 40)]), Times::Ms(_)));
        let mut w = Times::new(true);
        w.insert(1000, u64::MAX);
        assert_eq!(w.to_pairs(), vec![(1000, u64::MAX)]);
    }
}

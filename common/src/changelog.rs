//! The changelog: which replica missed which change. Each brick keeps, on
//! every file and directory, a counter per other brick of the set
//! (`trusted.cairn.afr.<brick-id>`: changes that brick missed, as data,
//! metadata and entry counts) and a `dirty` counter (changes in flight).
//! This module only judges counters; it does no I/O.

use uuid::Uuid;

pub const DIRTY: &str = "trusted.cairn.afr.dirty";

/// The counter (on other bricks) that blames `brick`.
pub fn pending_name(brick: &Uuid) -> String {
    format!("trusted.cairn.afr.{}", brick.simple())
}

/// Which slot of a counter a change counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Data = 0,
    Metadata = 1,
    Entry = 2,
}

impl Kind {
    pub fn delta(self, n: i32) -> [i32; 3] {
        let mut d = [0; 3];
        d[self as usize] = n;
        d
    }
}

pub type Counters = Vec<(String, [i32; 3])>;

/// What the counters say about one kind of change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// Children nobody (credible) blames: safe to read from, heal from.
    pub sources: Vec<usize>,
    /// Children that missed changes the sources have.
    pub sinks: Vec<usize>,
    /// Children blame each other and none can be trusted.
    pub split_brain: bool,
    /// Some child has a change in flight (or one a crash interrupted).
    pub dirty: bool,
}

/// Judges the counters read from each child (`None`: it did not answer).
/// `names[j]` is the counter name blaming child j; `may_source[j]` is false
/// for an arbiter when judging data (it holds none).
pub fn judge(names: &[String], counters: &[Option<Counters>], kind: Kind, may_source: &[bool]) -> Verdict {
    let n = names.len();
    let present: Vec<usize> = (0..n).filter(|i| counters[*i].is_some()).collect();
    let blames = |i: usize, j: usize| -> bool {
        i != j
            && counters[i]
                .as_ref()
                .is_some_and(|c| c.iter().any(|(name, v)| name == &names[j] && v[kind as usize] > 0))
    };
    let accusers = |j: usize| present.iter().filter(|&&i| blames(i, j)).count();
    let mut sources: Vec<usize> = present.iter().copied().filter(|&j| accusers(j) == 0).collect();
    if sources.is_empty() && present.len() >= 3 {
        // Everyone is blamed by someone (replica 3: "two blame one, one
        // blames two"): those blamed by fewer than a majority are sources.
        let majority = n / 2 + 1;
        sources = present.iter().copied().filter(|&j| accusers(j) < majority).collect();
    }
    let trusted: Vec<usize> = sources.iter().copied().filter(|&j| may_source[j]).collect();
    let split_brain = trusted.is_empty() && present.iter().any(|&j| accusers(j) > 0);
    let sinks = present.iter().copied().filter(|j| !sources.contains(j)).collect();
    let dirty = present.iter().any(|&i| {
        counters[i]
            .as_ref()
            .is_some_and(|c| c.iter().any(|(name, v)| name == DIRTY && v[kind as usize] != 0))
    });
    Verdict {
        sources: trusted,
        sinks,
        split_brain,
        dirty,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| pending_name(&Uuid::from_u128(i as u128 + 1))).collect()
    }

    /// counters[i] = list of (j, data count) that child i blames.
    fn counters(names: &[String], blame: &[&[(usize, i32)]]) -> Vec<Option<Counters>> {
        blame
            .iter()
            .map(|b| Some(b.iter().map(|(j, c)| (names[*j].clone(), [*c, 0, 0])).collect()))
            .collect()
    }

    #[test]
    fn clean_replicas_are_all_sources() {
        let n = names(3);
        let v = judge(&n, &counters(&n, &[&[], &[(0, 0)], &[]]), Kind::Data, &[true; 3]);
        assert_eq!(v.sources, vec![0, 1, 2]);
        assert!(!v.split_brain && v.sinks.is_empty());
    }

    #[test]
    fn a_blamed_replica_is_a_sink_and_an_absent_one_is_neither() {
        let n = names(3);
        let mut c = counters(&n, &[&[(2, 3)], &[(2, 3)], &[]]);
        let v = judge(&n, &c, Kind::Data, &[true; 3]);
        assert_eq!(
            (v.sources.clone(), v.sinks.clone(), v.split_brain),
            (vec![0, 1], vec![2], false)
        );
        // Metadata is judged apart from data.
        assert_eq!(judge(&n, &c, Kind::Metadata, &[true; 3]).sinks, Vec::<usize>::new());
        c[1] = None;
        let v = judge(&n, &c, Kind::Data, &[true; 3]);
        assert_eq!((v.sources, v.sinks), (vec![0], vec![2]));
    }

    #[test]
    fn mutual_blame_between_two_is_split_brain() {
        let n = names(2);
        let v = judge(&n, &counters(&n, &[&[(1, 1)], &[(0, 2)]]), Kind::Data, &[true; 2]);
        assert!(v.split_brain);
        assert!(v.sources.is_empty());
    }

    #[test]
    fn two_blaming_one_outvote_its_accusation() {
        let n = names(3);
        let v = judge(
            &n,
            &counters(&n, &[&[(2, 1)], &[(2, 1)], &[(0, 1), (1, 1)]]),
            Kind::Data,
            &[true; 3],
        );
        assert_eq!((v.sources, v.sinks, v.split_brain), (vec![0, 1], vec![2], false));
    }

    #[test]
    fn an_arbiter_is_never_a_data_source() {
        let n = names(3);
        // Only the arbiter (2) is unblamed: no copy of the data is good.
        let c = counters(&n, &[&[(1, 1)], &[(0, 1)], &[(0, 1), (1, 1)]]);
        let v = judge(&n, &c, Kind::Data, &[true, true, false]);
        assert!(v.split_brain, "{v:?}");
        // For metadata the arbiter counts: it and child 1 blame child 0.
        let meta = |blamed: &[usize]| Some(blamed.iter().map(|j| (n[*j].clone(), [0, 1, 0])).collect());
        let c = vec![meta(&[]), meta(&[0]), meta(&[0])];
        assert_eq!(judge(&n, &c, Kind::Metadata, &[true; 3]).sources, vec![1, 2]);
    }
}

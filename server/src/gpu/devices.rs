//! The set of GPUs an instance group runs on.

use std::fmt;

/// The highest GPU ordinal an instance group may name: the set is one 64-bit word, so that instance plans
/// stay `Copy`. Machines have at most a few dozen GPUs.
pub const MAX_GPU_ID: i32 = 63;

/// GPUs by CUDA ordinal, 0 to [`MAX_GPU_ID`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct DeviceSet(u64);

impl DeviceSet {
    /// No GPU.
    pub const EMPTY: DeviceSet = DeviceSet(0);

    /// This set and GPU `id`; an id outside 0 to [`MAX_GPU_ID`] is left out (configs are checked first).
    pub fn with(self, id: i32) -> DeviceSet {
        match u32::try_from(id) {
            Ok(bit) if id <= MAX_GPU_ID => DeviceSet(self.0 | (1u64 << bit)),
            _ => self,
        }
    }

    /// How many GPUs the set holds.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Whether the set holds no GPU.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether GPU `id` is in the set.
    pub fn contains(self, id: i32) -> bool {
        u32::try_from(id).is_ok_and(|bit| id <= MAX_GPU_ID && self.0 & (1u64 << bit) != 0)
    }

    /// The GPUs in ascending order.
    pub fn iter(self) -> impl Iterator<Item = i32> {
        (0..=MAX_GPU_ID).filter(move |id| self.contains(*id))
    }

    /// The GPU of instance `index` when instances go round the set: 0 on the first GPU, 1 on the second,
    /// and so on, so that `count` instances per GPU spread evenly and retiring the last ones keeps them even.
    pub fn device_for(self, index: usize) -> Option<i32> {
        let len = self.len();
        if len == 0 {
            return None;
        }
        self.iter().nth(index % len)
    }
}

impl fmt::Display for DeviceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self.iter().map(|id| id.to_string()).collect();
        write!(f, "[{}]", ids.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_go_round_the_gpus() {
        let set = DeviceSet::EMPTY.with(1).with(3).with(1);
        assert_eq!(set.len(), 2);
        assert_eq!(set.to_string(), "[1, 3]");
        let placed: Vec<Option<i32>> = (0..5).map(|i| set.device_for(i)).collect();
        assert_eq!(placed, [Some(1), Some(3), Some(1), Some(3), Some(1)]);
        assert_eq!(DeviceSet::EMPTY.device_for(0), None);
    }

    #[test]
    fn ids_outside_the_word_are_not_members() {
        let set = DeviceSet::EMPTY.with(-1).with(64).with(63);
        assert_eq!(set.iter().collect::<Vec<_>>(), [63]);
        assert!(!set.contains(-1) && !set.contains(64) && set.contains(63));
    }
}

//! Spreading a list's per-item work over the node's cores: the stats
//! lists read several cgroup files of each of hundreds of containers, and
//! those reads go as fast on every core as on one.

/// Items a thread is given at least (below that, starting it costs more
/// than it saves).
const MIN_PER_THREAD: usize = 16;

pub trait ParMap<T> {
    /// `f` of each item, in order, computed on up to one scoped thread
    /// per core.
    fn par_map<U: Send>(&self, f: impl Fn(&T) -> U + Sync) -> Vec<U>;
}

impl<T: Sync> ParMap<T> for [T] {
    fn par_map<U: Send>(&self, f: impl Fn(&T) -> U + Sync) -> Vec<U> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(self.len().div_ceil(MIN_PER_THREAD));
        if threads <= 1 {
            return self.iter().map(f).collect();
        }
        let f = &f;
        std::thread::scope(|s| {
            let parts: Vec<_> = self
                .chunks(self.len().div_ceil(threads))
                .map(|part| s.spawn(move || part.iter().map(f).collect::<Vec<U>>()))
                .collect();
            parts
                .into_iter()
                .flat_map(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ParMap;

    #[test]
    fn results_keep_the_items_order() {
        for n in [0, 1, 15, 16, 17, 100, 1001] {
            let items: Vec<usize> = (0..n).collect();
            let got = items.par_map(|i| i * 2);
            assert_eq!(got, items.iter().map(|i| i * 2).collect::<Vec<_>>(), "{n}");
        }
    }
}

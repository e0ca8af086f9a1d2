//! Who needs whom: each module depends on the modules that export the symbols it needs, and
//! depmod orders every dependency list by one topological order of the whole graph
//! (`depmod_calculate_dependencies` in kmod's `tools/depmod.c`).

use std::collections::HashMap;

use super::elf::ModuleElf;

/// The dependency graph of a kernel's modules, indexed as the module list is.
#[derive(Debug)]
pub struct Graph {
    /// Direct dependencies, in the order first needed.
    pub deps: Vec<Vec<usize>>,
    /// Position in the topological order (modules nobody needs come first).
    pub rank: Vec<usize>,
    /// Exported symbol → the module that owns it (the last one in module order to export it).
    pub owners: HashMap<Vec<u8>, usize>,
}

/// Modules in a dependency cycle, which depmod refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle(pub Vec<usize>);

impl Graph {
    pub fn build(modules: &[&ModuleElf]) -> Result<Graph, Cycle> {
        let mut owners: HashMap<Vec<u8>, usize> = HashMap::new();
        for (i, m) in modules.iter().enumerate() {
            for s in &m.exports {
                owners.insert(s.clone(), i);
            }
        }
        let mut deps: Vec<Vec<usize>> = vec![Vec::new(); modules.len()];
        let mut users = vec![0usize; modules.len()];
        for (i, m) in modules.iter().enumerate() {
            for need in &m.needs {
                // PPC64's function descriptors: `.foo` is `foo`.
                let name = need.strip_prefix(b".").unwrap_or(need);
                let Some(&owner) = owners.get(name) else {
                    continue;
                };
                if !deps[i].contains(&owner) {
                    deps[i].push(owner);
                    users[owner] += 1;
                }
            }
        }
        // Kahn's algorithm with a stack, seeded in module order: the exact order depmod
        // gives, which its output lists follow.
        let mut stack: Vec<usize> = (0..modules.len()).filter(|&i| users[i] == 0).collect();
        let mut rank = vec![usize::MAX; modules.len()];
        let mut next = 0;
        while let Some(m) = stack.pop() {
            rank[m] = next;
            next += 1;
            for &d in &deps[m] {
                users[d] -= 1;
                if users[d] == 0 {
                    stack.push(d);
                }
            }
        }
        if next < modules.len() {
            return Err(Cycle(
                (0..modules.len()).filter(|&i| users[i] > 0).collect(),
            ));
        }
        for d in &mut deps {
            d.sort_by_key(|&x| rank[x]);
        }
        Ok(Graph { deps, rank, owners })
    }

    /// Every module `m` needs, directly or not, in topological order (`modules.dep`'s list).
    pub fn closure(&self, m: usize) -> Vec<usize> {
        let mut seen = vec![false; self.deps.len()];
        let mut out = Vec::new();
        let mut stack = vec![m];
        while let Some(x) = stack.pop() {
            for &d in &self.deps[x] {
                if !seen[d] {
                    seen[d] = true;
                    out.push(d);
                    stack.push(d);
                }
            }
        }
        out.sort_by_key(|&x| self.rank[x]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(exports: &[&str], needs: &[&str]) -> ModuleElf {
        ModuleElf {
            exports: exports.iter().map(|s| s.as_bytes().to_vec()).collect(),
            needs: needs.iter().map(|s| s.as_bytes().to_vec()).collect(),
            ..ModuleElf::default()
        }
    }

    #[test]
    fn virtio_like_graph() {
        // 0 virtio_net → virtio, virtio_ring, net_failover; 1 virtio → virtio_ring;
        // 2 virtio_ring; 3 net_failover → failover; 4 failover.
        let mods = [
            m(
                &[],
                &[
                    "virtio_dev",
                    "vring_add",
                    "nf_create",
                    "printk",
                    "vring_add",
                ],
            ),
            m(&["virtio_dev"], &["vring_add"]),
            m(&["vring_add"], &[]),
            m(&["nf_create"], &["fo_register"]),
            m(&["fo_register"], &[]),
        ];
        let refs: Vec<&ModuleElf> = mods.iter().collect();
        let g = Graph::build(&refs).unwrap();
        assert_eq!(g.deps[0].len(), 3);
        let c = g.closure(0);
        assert_eq!(c.len(), 4);
        // Every module comes before the modules it needs.
        for (i, d) in g.deps.iter().enumerate() {
            for &x in d {
                assert!(g.rank[i] < g.rank[x]);
            }
        }
        assert!(g.closure(2).is_empty());
        assert_eq!(g.closure(1), [2]);
    }

    #[test]
    fn the_last_exporter_owns_a_symbol() {
        let mods = [m(&["s"], &[]), m(&["s"], &[]), m(&[], &["s"])];
        let refs: Vec<&ModuleElf> = mods.iter().collect();
        assert_eq!(Graph::build(&refs).unwrap().deps[2], [1]);
    }

    #[test]
    fn cycles_are_refused() {
        let mods = [m(&["a"], &["b"]), m(&["b"], &["a"]), m(&[], &["a"])];
        let refs: Vec<&ModuleElf> = mods.iter().collect();
        assert_eq!(Graph::build(&refs).unwrap_err(), Cycle(vec![0, 1]));
    }
}

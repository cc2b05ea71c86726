//! Intrusive doubly-linked lists threaded through a slab of nodes indexed
//! by `u32`: what every replacement policy here is built from. A node may
//! sit on several lists at once (LIRS keeps each block both in its stack
//! and in a queue), one [`Link`] per kind of list, which the node hands
//! out through [`Linked`].

/// No node.
pub(crate) const NIL: u32 = u32::MAX;

/// A node's neighbours on one list: `prev` towards the head (newest),
/// `next` towards the tail (the end evicted first).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Link {
    pub(crate) prev: u32,
    pub(crate) next: u32,
}

impl Link {
    /// On no list.
    pub(crate) const NONE: Link = Link {
        prev: NIL,
        next: NIL,
    };
}

/// A node type whose links of each kind (`0` for nodes on one kind of list
/// only) the lists can reach.
pub(crate) trait Linked {
    fn link(&mut self, kind: usize) -> &mut Link;
}

/// Asks the CPU to start loading `slab[at]` into its cache (nothing when
/// `at` is out of range, or on other architectures). Changes nothing.
#[inline]
pub(crate) fn prefetch<T>(slab: &[T], at: u32) {
    if let Some(item) = slab.get(at as usize) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch only hints the cache; it never faults and
        // reads nothing the program sees. The address is of a live item.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                (item as *const T).cast::<i8>(),
            );
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = item;
    }
}

/// Stores `node` in the slab, in a freed slot if there is one, and returns
/// its index.
pub(crate) fn slab_insert<T>(nodes: &mut Vec<T>, free: &mut Vec<u32>, node: T) -> u32 {
    match free.pop() {
        Some(at) => {
            nodes[at as usize] = node;
            at
        }
        None => {
            nodes.push(node);
            (nodes.len() - 1) as u32
        }
    }
}

/// One list: its two ends and its length.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ends {
    pub(crate) head: u32,
    pub(crate) tail: u32,
    pub(crate) len: usize,
}

impl Ends {
    pub(crate) const EMPTY: Ends = Ends {
        head: NIL,
        tail: NIL,
        len: 0,
    };

    /// The oldest node, if any.
    pub(crate) fn tail(&self) -> Option<u32> {
        (self.tail != NIL).then_some(self.tail)
    }

    /// Links `at`, on no list of this kind, at the head (newest end).
    pub(crate) fn push_head<T: Linked>(&mut self, nodes: &mut [T], at: u32, kind: usize) {
        let head = self.head;
        *nodes[at as usize].link(kind) = Link {
            prev: NIL,
            next: head,
        };
        if head != NIL {
            nodes[head as usize].link(kind).prev = at;
        } else {
            self.tail = at;
        }
        self.head = at;
        self.len += 1;
    }

    /// Takes `at` off this list.
    pub(crate) fn unlink<T: Linked>(&mut self, nodes: &mut [T], at: u32, kind: usize) {
        let Link { prev, next } = *nodes[at as usize].link(kind);
        if prev != NIL {
            nodes[prev as usize].link(kind).next = next;
        } else {
            self.head = next;
        }
        if next != NIL {
            nodes[next as usize].link(kind).prev = prev;
        } else {
            self.tail = prev;
        }
        self.len -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Two {
        links: [Link; 2],
    }

    impl Linked for Two {
        fn link(&mut self, kind: usize) -> &mut Link {
            &mut self.links[kind]
        }
    }

    /// The list's nodes from head to tail, checked against the walk back.
    fn walk(ends: &Ends, nodes: &mut [Two], kind: usize) -> Vec<u32> {
        let mut forward = Vec::new();
        let mut at = ends.head;
        while at != NIL {
            forward.push(at);
            at = nodes[at as usize].link(kind).next;
        }
        let mut backward = Vec::new();
        let mut at = ends.tail;
        while at != NIL {
            backward.push(at);
            at = nodes[at as usize].link(kind).prev;
        }
        backward.reverse();
        assert_eq!(forward, backward, "links agree both ways");
        assert_eq!(forward.len(), ends.len, "length");
        forward
    }

    #[test]
    fn two_kinds_of_list_through_the_same_nodes() {
        let mut nodes: Vec<Two> = (0..5)
            .map(|_| Two {
                links: [Link::NONE; 2],
            })
            .collect();
        let (mut a, mut b) = (Ends::EMPTY, Ends::EMPTY);
        for at in 0..5 {
            a.push_head(&mut nodes, at, 0);
        }
        for at in [3, 1, 4] {
            b.push_head(&mut nodes, at, 1);
        }
        assert_eq!(walk(&a, &mut nodes, 0), vec![4, 3, 2, 1, 0]);
        assert_eq!(walk(&b, &mut nodes, 1), vec![4, 1, 3]);
        // Unlinking the head, the tail and a middle node of one list
        // leaves the other alone.
        for at in [4, 0, 2] {
            a.unlink(&mut nodes, at, 0);
        }
        assert_eq!(walk(&a, &mut nodes, 0), vec![3, 1]);
        assert_eq!(walk(&b, &mut nodes, 1), vec![4, 1, 3]);
        assert_eq!(a.tail(), Some(1));
        a.unlink(&mut nodes, 3, 0);
        a.unlink(&mut nodes, 1, 0);
        assert_eq!((a.head, a.tail(), a.len), (NIL, None, 0));
    }
}

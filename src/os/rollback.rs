//! Which deployments a rollback and a prune write, as pure functions of the sysroot's deployment list
//! (in `ostree_sysroot_get_deployments` order: staged first, then the default, …). The backends load,
//! lock and write; these only decide.

/// What the decisions need to know about one deployment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) booted: bool,
    pub(crate) staged: bool,
    pub(crate) pinned: bool,
    /// Of the booted (or default) deployment's stateroot.
    pub(crate) ours: bool,
}

/// The new order that makes `to` the default for the next boot: `to` first, the others after it in
/// their order, a staged deployment dropped (it would boot instead). `None` when `to` already is the
/// first deployment that is not staged and nothing is staged: there is nothing to write.
///
/// ostree's `ostree admin set-default` (src/ostree/ot-admin-builtin-set-default.c) and rpm-ostree's
/// rollback transaction (rpmostreed-transaction-types.cxx rollback_transaction_execute) both move the
/// chosen deployment to the front and call `ostree_sysroot_write_deployments` with the rest in order.
pub(crate) fn rollback_order(slots: &[Slot], to: usize) -> Option<Vec<usize>> {
    let staged = slots.iter().any(|s| s.staged);
    let default = slots.iter().position(|s| !s.staged);
    if !staged && default == Some(to) {
        return None;
    }
    let mut order = vec![to];
    order.extend((0..slots.len()).filter(|i| *i != to && !slots[*i].staged));
    Some(order)
}

/// The deployments a prune keeps: everything up to and including the booted one (staged, pending,
/// booted), the first one of the same stateroot after it (the rollback: the previous deployment), and
/// pinned ones and other stateroots' wherever they are (as ostree_sysroot_simple_write_deployment and
/// rpm-ostree's rpmostree_syscore_filter_deployments keep them). `None` when nothing goes.
pub(crate) fn prune_keep(slots: &[Slot]) -> Option<Vec<usize>> {
    let booted = slots
        .iter()
        .position(|s| s.booted)
        .or_else(|| slots.iter().position(|s| !s.staged))?;
    let mut rollback_kept = false;
    let keep: Vec<usize> = (0..slots.len())
        .filter(|&i| {
            let s = slots[i];
            if i <= booted || s.pinned || !s.ours {
                return true;
            }
            if !rollback_kept {
                rollback_kept = true;
                return true;
            }
            false
        })
        .collect();
    (keep.len() < slots.len()).then_some(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(booted: bool, staged: bool) -> Slot {
        Slot {
            booted,
            staged,
            pinned: false,
            ours: true,
        }
    }

    #[test]
    fn rollback_moves_the_previous_deployment_to_the_front_once() {
        // [booted B, rollback A] -> [A, B]
        let s = [slot(true, false), slot(false, false)];
        assert_eq!(rollback_order(&s, 1), Some(vec![1, 0]));
        // Done already: A is the default in front of the booted B.
        let after = [slot(false, false), slot(true, false)];
        assert_eq!(rollback_order(&after, 0), None);
        // A staged deployment is dropped: it would boot instead.
        let staged = [slot(false, true), slot(true, false), slot(false, false)];
        assert_eq!(rollback_order(&staged, 2), Some(vec![2, 1]));
        // Three deployments: the others keep their order behind it.
        let three = [slot(true, false), slot(false, false), slot(false, false)];
        assert_eq!(rollback_order(&three, 1), Some(vec![1, 0, 2]));
    }

    #[test]
    fn prune_keeps_the_booted_and_the_previous_deployment() {
        let s = [slot(true, false), slot(false, false), slot(false, false)];
        assert_eq!(prune_keep(&s), Some(vec![0, 1]));
        // Nothing older than the rollback: nothing to do.
        assert_eq!(prune_keep(&s[..2]), None);
        // Pinned and other stateroots stay wherever they are.
        let mut pinned = s;
        pinned[2].pinned = true;
        assert_eq!(prune_keep(&pinned), None);
        let mut other = [
            slot(true, false),
            slot(false, false),
            slot(false, false),
            slot(false, false),
        ];
        other[2].ours = false;
        assert_eq!(prune_keep(&other), Some(vec![0, 1, 2]));
        // A default in front of the booted one (after a rollback) is kept with it.
        let rolled = [slot(false, false), slot(true, false), slot(false, false)];
        assert_eq!(prune_keep(&rolled), None);
        // A sandbox with nothing booted: the default counts as booted.
        let sandbox = [slot(false, false), slot(false, false), slot(false, false)];
        assert_eq!(prune_keep(&sandbox), Some(vec![0, 1]));
        assert_eq!(prune_keep(&[]), None);
    }
}

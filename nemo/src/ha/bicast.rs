//! Make-before-break at the home agent (issue 29): when a registration
//! moves a binding to another care-of address, the old one keeps getting
//! a copy of every packet for a window, and the reverse tunnel keeps taking
//! packets from it, so that a tenant whose placement moved before its VM
//! did (a placement at the start of a live migration) loses nothing while
//! the VM still runs at the old site, and one whose VM resumes back there
//! (a migration that failed after the switch-over) is reached there at
//! once.
//!
//! RFC 5648 §6.1 is the precedent: a home agent with several care-of
//! bindings for one home address "can use any of the bindings", and "this
//! document does not provide any mechanism to select the suitable binding
//! for forwarding data packets". nemo's choice for a moving binding is
//! both, for [`Bicasts::new`]'s window, which goes on while the old address
//! still sends the tenant's packets (the VM still runs there: a live
//! migration's copying can last minutes), for a window after its last one,
//! and at most [`LONGEST`] in all. It ends then, when the binding moves
//! again (a new window for the new old address), or when the binding is
//! removed. Windows are not persisted or replicated: a restart or a
//! takeover ends them (the new binding stands alone, as before).
//!
//! Sans-IO: changes, time and what the data plane heard in, [`Copying`]
//! actions out; the driver applies them to the data plane.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Binding, Change};

/// What the data plane must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Copying {
    /// Copy the packets of `second`'s destinations to `second.care_of`
    /// (the address the binding just left), and take reverse-tunnelled
    /// packets from there.
    Start(Arc<Binding>),
    /// Stop that.
    End(Arc<Binding>),
}

/// The longest a window lasts, however long the old address sends: an old
/// site must not keep a tenant's copies for ever.
pub const LONGEST: Duration = Duration::from_secs(600);

/// One open window.
#[derive(Debug)]
struct Window {
    /// The binding as it was before its move (its care-of address is the
    /// one copied to).
    left: Arc<Binding>,
    /// When it opened.
    opened: SystemTime,
    /// When it ends unless the old address was heard from since.
    until: SystemTime,
}

/// The windows open now, by home address.
#[derive(Debug)]
pub struct Bicasts {
    window: Duration,
    open: HashMap<Ipv6Addr, Window>,
    deadlines: BTreeSet<(SystemTime, Ipv6Addr)>,
}

impl Bicasts {
    /// Windows of `window` each; a zero window opens none.
    pub fn new(window: Duration) -> Bicasts {
        Bicasts {
            window,
            open: HashMap::new(),
            deadlines: BTreeSet::new(),
        }
    }

    /// How long a window lasts.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Windows open now.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// No window open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// A change the data plane now has: what it means for the copies.
    pub fn changed(&mut self, change: &Change, now: SystemTime) -> Vec<Copying> {
        let home_address = change.binding().home_address;
        let mut actions = Vec::new();
        let moved_from = match change {
            Change::Upsert {
                binding,
                previous: Some(previous),
            } if previous.care_of != binding.care_of => Some(previous.clone()),
            // A refresh or new prefixes at the same address: the window,
            // if any, goes on.
            Change::Upsert { .. } => return actions,
            Change::Remove { .. } => None,
        };
        if let Some(ended) = self.close(home_address) {
            actions.push(Copying::End(ended));
        }
        if let Some(previous) = moved_from.filter(|_| !self.window.is_zero()) {
            let until = now + self.window;
            self.open.insert(
                home_address,
                Window {
                    left: previous.clone(),
                    opened: now,
                    until,
                },
            );
            self.deadlines.insert((until, home_address));
            actions.push(Copying::Start(previous));
        }
        actions
    }

    /// When the next window ends.
    pub fn poll_timeout(&self) -> Option<SystemTime> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// The windows whose deadline has come at `now`: the driver asks the
    /// data plane when each one's old address was last heard from and
    /// [`Bicasts::settle`]s it.
    pub fn due(&self, now: SystemTime) -> Vec<Arc<Binding>> {
        self.deadlines
            .iter()
            .take_while(|(at, _)| *at <= now)
            .filter_map(|(_, home_address)| Some(self.open.get(home_address)?.left.clone()))
            .collect()
    }

    /// A due window whose old address was last heard from `heard_ago`
    /// before `now` (`None`: not since the move): it goes on until a
    /// window after that (at most [`LONGEST`] after it opened), or ends.
    pub fn settle(
        &mut self,
        home_address: Ipv6Addr,
        heard_ago: Option<Duration>,
        now: SystemTime,
    ) -> Option<Copying> {
        let window = self.open.get_mut(&home_address)?;
        if window.until > now {
            return None;
        }
        let heard = heard_ago.and_then(|ago| now.checked_sub(ago));
        let until = heard
            .filter(|heard| *heard >= window.opened)
            .map(|heard| heard + self.window)
            .filter(|until| *until > now)
            .map(|until| until.min(window.opened + LONGEST))
            .filter(|until| *until > now);
        match until {
            Some(until) => {
                self.deadlines.remove(&(window.until, home_address));
                window.until = until;
                self.deadlines.insert((until, home_address));
                None
            }
            None => self.close(home_address).map(Copying::End),
        }
    }

    /// Closes every window (the home agent stops being the active one).
    pub fn close_all(&mut self) -> Vec<Copying> {
        self.deadlines.clear();
        self.open
            .drain()
            .map(|(_, window)| Copying::End(window.left))
            .collect()
    }

    fn close(&mut self, home_address: Ipv6Addr) -> Option<Arc<Binding>> {
        let window = self.open.remove(&home_address)?;
        self.deadlines.remove(&(window.until, home_address));
        Some(window.left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::CareOf;
    use crate::wire::{Lifetime, SequenceNumber};

    fn binding(care_of: &str) -> Arc<Binding> {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        Arc::new(Binding {
            home_address: "2001:db8:100::1".parse().unwrap(),
            care_of: CareOf::Ipv6(care_of.parse().unwrap()),
            prefixes: vec!["2001:db8:100::/56".parse().unwrap()].into(),
            mobile_router: true,
            sequence: SequenceNumber(1),
            spi: 256,
            timestamp: None,
            lifetime: Lifetime(60),
            registered_at: at,
            expires_at: at + Duration::from_secs(240),
        })
    }

    fn moved(from: &Arc<Binding>, to: &Arc<Binding>) -> Change {
        Change::Upsert {
            binding: to.clone(),
            previous: Some(from.clone()),
        }
    }

    #[test]
    fn a_move_copies_to_the_old_address_until_the_window_ends() {
        let (a, b) = (binding("2001:db8:a::2"), binding("2001:db8:b::2"));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000);
        let mut bicasts = Bicasts::new(Duration::from_secs(3));
        assert_eq!(
            bicasts.changed(&moved(&a, &b), now),
            vec![Copying::Start(a.clone())]
        );
        assert_eq!(bicasts.poll_timeout(), Some(now + Duration::from_secs(3)));
        assert!(bicasts.due(now + Duration::from_secs(2)).is_empty());
        // A refresh at B leaves the window alone.
        assert!(bicasts.changed(&moved(&b, &b), now).is_empty());
        let end = now + Duration::from_secs(3);
        assert_eq!(bicasts.due(end), vec![a.clone()]);
        assert_eq!(
            bicasts.settle(a.home_address, None, end),
            Some(Copying::End(a))
        );
        assert!(bicasts.is_empty());
        assert_eq!(bicasts.poll_timeout(), None);
    }

    #[test]
    fn the_window_goes_on_while_the_old_address_sends_and_no_longer_than_the_longest() {
        let (a, b) = (binding("2001:db8:a::2"), binding("2001:db8:b::2"));
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000);
        let window = Duration::from_secs(3);
        let mut bicasts = Bicasts::new(window);
        let _ = bicasts.changed(&moved(&a, &b), start);
        let home = a.home_address;
        // Heard from 1 s ago at the deadline: 2 s more.
        let first = start + window;
        assert_eq!(
            bicasts.settle(home, Some(Duration::from_secs(1)), first),
            None
        );
        assert_eq!(
            bicasts.poll_timeout(),
            Some(first - Duration::from_secs(1) + window)
        );
        assert!(bicasts.due(first).is_empty());
        // Settling before the deadline changes nothing.
        assert_eq!(bicasts.settle(home, None, first), None);
        assert_eq!(bicasts.len(), 1);
        // Heard from last before the move (or a window ago): it ends.
        let second = first + Duration::from_secs(2);
        assert_eq!(
            bicasts.settle(home, Some(Duration::from_secs(2_000)), second),
            Some(Copying::End(a.clone()))
        );
        // A sender that never stops is copied to for LONGEST at most.
        let _ = bicasts.changed(&moved(&a, &b), start);
        let mut now = start + window;
        let mut ended = None;
        while ended.is_none() {
            assert!(now <= start + LONGEST, "copied past LONGEST");
            ended = bicasts.settle(home, Some(Duration::ZERO), now);
            now = bicasts.poll_timeout().unwrap_or(now);
        }
        assert_eq!(now, start + LONGEST);
        assert!(bicasts.is_empty());
    }

    #[test]
    fn moving_back_swaps_the_copies_and_removal_ends_them() {
        let (a, b) = (binding("2001:db8:a::2"), binding("2001:db8:b::2"));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000);
        let mut bicasts = Bicasts::new(Duration::from_secs(3));
        let _ = bicasts.changed(&moved(&a, &b), now);
        // The VM resumed at A again: A is the binding, B gets the copies.
        assert_eq!(
            bicasts.changed(&moved(&b, &a), now + Duration::from_secs(1)),
            vec![Copying::End(a.clone()), Copying::Start(b.clone())]
        );
        assert_eq!(bicasts.len(), 1);
        assert_eq!(
            bicasts.changed(&Change::Remove { binding: a }, now),
            vec![Copying::End(b)]
        );
        assert!(bicasts.is_empty());
        assert_eq!(bicasts.poll_timeout(), None);
    }

    #[test]
    fn no_window_no_copies_and_close_all_ends_every_window() {
        let (a, b) = (binding("2001:db8:a::2"), binding("2001:db8:b::2"));
        let now = SystemTime::UNIX_EPOCH;
        assert!(Bicasts::new(Duration::ZERO)
            .changed(&moved(&a, &b), now)
            .is_empty());
        let created = Change::Upsert {
            binding: a.clone(),
            previous: None,
        };
        let mut bicasts = Bicasts::new(Duration::from_secs(1));
        assert!(bicasts.changed(&created, now).is_empty());
        let _ = bicasts.changed(&moved(&a, &b), now);
        assert_eq!(bicasts.close_all(), vec![Copying::End(a)]);
        assert_eq!(bicasts.poll_timeout(), None);
    }
}

//! The VRRPv3 state machine (RFC 5798 §6.4) with simulated time: routers on
//! one simulated link, advertisements delivered or lost, elections,
//! takeover timing, priority ties, preemption and resignation.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use nemo::vrrp::{
    default_virtual_link_local, virtual_addresses, Action, Advertisement, Advertisers,
    Centiseconds, Discarded, Heard, RouterConfig, State, Stepdown, Takeover, VirtualRouter,
};
use nemo_testkit::addr;

const VIRTUAL: &str = "2001:db8:1::1";

fn config(primary: &str, priority: u8, preempt: bool) -> RouterConfig {
    RouterConfig {
        vrid: 12,
        priority,
        advert_interval: Centiseconds::new(100).unwrap(),
        preempt,
        primary_address: addr(primary),
        addresses: vec![addr("fe80::12"), addr(VIRTUAL)],
        advertisers: Advertisers::Any,
    }
}

/// Routers on one link; what each sends reaches the others unless lost.
struct Link {
    now: Instant,
    routers: Vec<VirtualRouter>,
    /// Per router: drop what it sends while true.
    muted: Vec<bool>,
    /// Every takeover and step-down, with when and who.
    log: Vec<(Duration, usize, Action)>,
    start: Instant,
}

impl Link {
    fn new(configs: Vec<RouterConfig>) -> Link {
        let now = Instant::now();
        let count = configs.len();
        Link {
            now,
            start: now,
            routers: configs.into_iter().map(VirtualRouter::new).collect(),
            muted: vec![false; count],
            log: Vec::new(),
        }
    }

    fn start_all(&mut self) {
        for router in &mut self.routers {
            router.start(self.now);
        }
        self.deliver();
    }

    /// Delivers every pending action: advertisements to the other routers.
    fn deliver(&mut self) {
        loop {
            let mut sent = Vec::new();
            for (index, router) in self.routers.iter_mut().enumerate() {
                while let Some(action) = router.poll_action() {
                    match action {
                        Action::Send(advertisement) => {
                            if !self.muted[index] {
                                sent.push((index, router.config().primary_address, advertisement));
                            }
                        }
                        other => self.log.push((self.now - self.start, index, other)),
                    }
                }
            }
            if sent.is_empty() {
                return;
            }
            for (from, source, advertisement) in sent {
                for (index, router) in self.routers.iter_mut().enumerate() {
                    if index != from {
                        let _ = router.handle_advertisement(source, &advertisement, self.now);
                    }
                }
            }
        }
    }

    /// Runs the timers until `duration` has passed.
    fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        loop {
            let next = self.routers.iter().filter_map(|r| r.poll_timeout()).min();
            match next {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    for router in &mut self.routers {
                        router.handle_timeout(self.now);
                    }
                    self.deliver();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn states(&self) -> Vec<State> {
        self.routers.iter().map(VirtualRouter::state).collect()
    }

    fn takeovers(&self) -> Vec<(Duration, usize)> {
        self.log
            .iter()
            .filter(|(_, _, action)| matches!(action, Action::TakeOver(_)))
            .map(|(at, index, _)| (*at, *index))
            .collect()
    }
}

#[test]
fn a_lone_backup_takes_over_after_master_down_interval() {
    let mut router = VirtualRouter::new(config("fe80::a", 100, true));
    let start = Instant::now();
    router.start(start);
    assert_eq!(router.state(), State::Backup);
    // Skew_Time = (256 - 100) * 100 cs / 256 = 60 cs; 3 * 1 s + 0.6 s.
    assert_eq!(router.skew_time(), Duration::from_millis(600));
    assert_eq!(
        router.poll_timeout(),
        Some(start + Duration::from_millis(3600))
    );
    router.handle_timeout(start + Duration::from_millis(3599));
    assert_eq!(router.state(), State::Backup);
    router.handle_timeout(start + Duration::from_millis(3600));
    assert_eq!(router.state(), State::Master);
    let Some(Action::Send(advertisement)) = router.poll_action() else {
        panic!("no advertisement on takeover");
    };
    assert_eq!(advertisement.priority, 100);
    assert_eq!(advertisement.vrid, 12);
    assert_eq!(
        router.poll_action(),
        Some(Action::TakeOver(Takeover::MasterDown))
    );
    // Then one advertisement per interval.
    assert_eq!(
        router.poll_timeout(),
        Some(start + Duration::from_millis(4600))
    );
}

#[test]
fn the_higher_priority_wins_and_keeps_the_role_while_it_advertises() {
    let mut link = Link::new(vec![
        config("fe80::a", 200, true),
        config("fe80::b", 100, true),
    ]);
    link.start_all();
    link.run_for(Duration::from_secs(30));
    assert_eq!(link.states(), [State::Master, State::Backup]);
    // The higher priority's shorter skew made it master first (3 s + 0.21 s),
    // and the other never took over.
    assert_eq!(link.takeovers(), [(Duration::from_millis(3210), 0)]);
}

#[test]
fn two_lost_advertisements_are_tolerated_and_the_master_down_interval_is_not() {
    let mut link = Link::new(vec![
        config("fe80::a", 200, true),
        config("fe80::b", 100, true),
    ]);
    link.start_all();
    link.run_for(Duration::from_secs(10));
    // Two advertisements lost (at 10.21 s and 11.21 s; the one at 12.21 s
    // comes within 3.6 s of the one heard at 9.21 s): the backup waits.
    link.muted[0] = true;
    link.run_for(Duration::from_millis(1500));
    link.muted[0] = false;
    link.run_for(Duration::from_secs(10));
    assert_eq!(link.states(), [State::Master, State::Backup]);
    assert_eq!(link.takeovers().len(), 1);

    // The master falls silent (its process is gone): the backup takes over
    // within Master_Down_Interval of the last advertisement it heard.
    let silent_from = link.now - link.start;
    link.muted[0] = true;
    link.routers[0].shutdown();
    let _ = link.routers[0].poll_action();
    let _ = link.routers[0].poll_action();
    link.run_for(Duration::from_secs(5));
    assert_eq!(link.states(), [State::Initialize, State::Master]);
    let (at, who) = *link.takeovers().last().unwrap();
    assert_eq!(who, 1);
    assert!(
        at - silent_from <= Duration::from_millis(3600),
        "took over {:?} after the master fell silent",
        at - silent_from
    );
}

#[test]
fn a_resigning_master_hands_over_after_skew_time() {
    let mut link = Link::new(vec![
        config("fe80::a", 200, true),
        config("fe80::b", 100, true),
    ]);
    link.start_all();
    link.run_for(Duration::from_secs(10));
    let stopped_at = link.now - link.start;
    link.routers[0].shutdown();
    link.deliver();
    assert!(link
        .log
        .iter()
        .any(|(_, who, action)| *who == 0 && *action == Action::StepDown(Stepdown::Shutdown)));
    link.run_for(Duration::from_secs(5));
    assert_eq!(link.states(), [State::Initialize, State::Master]);
    let (at, _) = *link.takeovers().last().unwrap();
    // Skew_Time of priority 100 at 1 s: 0.6 s, not 3.6 s.
    assert_eq!(at - stopped_at, Duration::from_millis(600));
}

#[test]
fn equal_priorities_are_broken_by_the_higher_primary_address() {
    // Both start as masters (a healed partition): the lower address steps
    // down as soon as it hears the higher one.
    let mut link = Link::new(vec![
        config("fe80::a", 150, true),
        config("fe80::b", 150, true),
    ]);
    link.muted = vec![true, true];
    link.start_all();
    link.run_for(Duration::from_secs(5));
    assert_eq!(link.states(), [State::Master, State::Master]);
    link.muted = vec![false, false];
    link.run_for(Duration::from_secs(5));
    assert_eq!(link.states(), [State::Backup, State::Master]);
    assert!(link.log.iter().any(|(_, who, action)| *who == 0
        && *action
            == Action::StepDown(Stepdown::Preempted {
                by: addr("fe80::b"),
                priority: 150,
            })));
}

#[test]
fn preemption_takes_over_from_a_lower_master_only_when_enabled() {
    for (preempt, expected) in [
        (true, [State::Backup, State::Master]),
        (false, [State::Master, State::Backup]),
    ] {
        // The lower-priority router is master alone; then the higher one
        // starts.
        let mut link = Link::new(vec![
            config("fe80::a", 100, true),
            config("fe80::b", 200, preempt),
        ]);
        link.routers[0].start(link.now);
        link.deliver();
        link.run_for(Duration::from_secs(10));
        assert_eq!(link.states(), [State::Master, State::Initialize]);
        link.routers[1].start(link.now);
        link.deliver();
        link.run_for(Duration::from_secs(10));
        assert_eq!(link.states(), expected, "preempt {preempt}");
    }
}

#[test]
fn the_owner_is_master_at_once_and_hears_nobody() {
    let mut owner = VirtualRouter::new(config("fe80::a", 255, true));
    let now = Instant::now();
    owner.start(now);
    assert_eq!(owner.state(), State::Master);
    assert!(matches!(owner.poll_action(), Some(Action::Send(_))));
    assert_eq!(owner.poll_action(), Some(Action::TakeOver(Takeover::Owner)));
    let other = Advertisement {
        vrid: 12,
        priority: 254,
        max_advert_interval: Centiseconds::new(100).unwrap(),
        addresses: vec![addr("fe80::12"), addr(VIRTUAL)],
    };
    assert_eq!(
        owner.handle_advertisement(addr("fe80::b"), &other, now),
        Err(Discarded::Owner)
    );
    assert_eq!(owner.state(), State::Master);
}

#[test]
fn advertisements_not_for_this_router_are_discarded_and_named() {
    let mut router = VirtualRouter::new(config("fe80::a", 100, true));
    let now = Instant::now();
    let advertisement = |vrid: u8, addresses: Vec<Ipv6Addr>| Advertisement {
        vrid,
        priority: 200,
        max_advert_interval: Centiseconds::new(100).unwrap(),
        addresses,
    };
    let ours = vec![addr("fe80::12"), addr(VIRTUAL)];
    assert_eq!(
        router.handle_advertisement(addr("fe80::b"), &advertisement(12, ours.clone()), now),
        Err(Discarded::NotRunning)
    );
    router.start(now);
    assert_eq!(
        router.handle_advertisement(addr("fe80::b"), &advertisement(13, ours.clone()), now),
        Err(Discarded::OtherVirtualRouter)
    );
    assert_eq!(
        router.handle_advertisement(addr("fe80::a"), &advertisement(12, ours.clone()), now),
        Err(Discarded::Own)
    );
    assert_eq!(
        router.handle_advertisement(
            addr("fe80::b"),
            &advertisement(12, vec![addr("fe80::12"), addr("2001:db8:1::2")]),
            now
        ),
        Err(Discarded::AddressMismatch)
    );
    // A master's advertisement moves the backup's timer.
    let later = now + Duration::from_secs(2);
    assert_eq!(
        router.handle_advertisement(addr("fe80::b"), &advertisement(12, ours), later),
        Ok(Heard::Agreeing)
    );
    assert_eq!(
        router.poll_timeout(),
        Some(later + Duration::from_millis(3600))
    );
}

/// Issue 32, item 5: with the other member named, an advertisement from
/// anyone else, from a non-link-local source, or claiming to own the
/// addresses (priority 255, or a long interval that would keep the
/// members backup) deposes nobody and delays no takeover.
#[test]
fn only_the_named_member_is_heard() {
    let mut named = config("fe80::a", 100, true);
    named.advertisers = Advertisers::Only(vec![addr("fe80::b")]);
    let ours = vec![addr("fe80::12"), addr(VIRTUAL)];
    let advertisement = |priority: u8, centiseconds: u16| Advertisement {
        vrid: 12,
        priority,
        max_advert_interval: Centiseconds::new(centiseconds).unwrap(),
        addresses: ours.clone(),
    };
    // A lone member becomes master; the forgeries do not depose it.
    let mut link = Link::new(vec![named.clone()]);
    link.start_all();
    link.run_for(Duration::from_secs(4));
    assert_eq!(link.routers[0].state(), State::Master);
    let now = link.now;
    let router = &mut link.routers[0];
    assert_eq!(
        router.handle_advertisement(addr("fe80::66"), &advertisement(255, 100), now),
        Err(Discarded::NotAnAdvertiser)
    );
    assert_eq!(
        router.handle_advertisement(addr("2001:db8:1::66"), &advertisement(254, 100), now),
        Err(Discarded::NotLinkLocal)
    );
    assert_eq!(
        router.handle_advertisement(addr("fe80::b"), &advertisement(255, 100), now),
        Err(Discarded::OwnerClaim)
    );
    assert!(Discarded::NotAnAdvertiser.is_suspect() && !Discarded::Own.is_suspect());
    assert_eq!(router.state(), State::Master);
    // The named member is heard: a higher priority deposes.
    assert_eq!(
        router.handle_advertisement(addr("fe80::b"), &advertisement(200, 100), now),
        Ok(Heard::Agreeing)
    );
    assert_eq!(router.state(), State::Backup);

    // A backup ignores a stranger's long interval and takes over on time.
    let mut backup = VirtualRouter::new(named);
    let start = Instant::now();
    backup.start(start);
    let down = backup.poll_timeout().unwrap();
    assert_eq!(
        backup.handle_advertisement(addr("fe80::66"), &advertisement(254, 4095), start),
        Err(Discarded::NotAnAdvertiser)
    );
    assert_eq!(backup.poll_timeout(), Some(down));
}

/// Issue 32, item 5 (RFC 5798 §5.2.9, §7.1): the virtual link-local
/// address goes first, derived from the VRID when the configuration names
/// none; the named member is heard even when its list differs (counted by
/// the driver), since two members ignoring each other both hold the
/// address; a stranger with another list is not (another virtual router
/// with the same VRID).
#[test]
fn the_link_local_goes_first_and_a_named_member_is_heard_whatever_its_list() {
    let global = addr(VIRTUAL);
    assert_eq!(default_virtual_link_local(12), addr("fe80::5e:2:c"));
    assert_eq!(
        virtual_addresses(12, &[global]),
        vec![addr("fe80::5e:2:c"), global]
    );
    assert_eq!(
        virtual_addresses(12, &[addr("fe80::12"), global]),
        vec![addr("fe80::12"), global]
    );

    let mut named = config("fe80::a", 100, true);
    named.advertisers = Advertisers::Only(vec![addr("fe80::b")]);
    let mut router = VirtualRouter::new(named);
    let start = Instant::now();
    router.start(start);
    let down = router.poll_timeout().unwrap();
    // An earlier nemo's list (the global address alone) from the member.
    let earlier = Advertisement {
        vrid: 12,
        priority: 200,
        max_advert_interval: Centiseconds::new(100).unwrap(),
        addresses: vec![global],
    };
    let heard_at = start + Duration::from_secs(2);
    assert_eq!(
        router.handle_advertisement(addr("fe80::b"), &earlier, heard_at),
        Ok(Heard::AddressesDiffer)
    );
    assert!(
        router.poll_timeout().unwrap() > down,
        "the master down timer moved"
    );

    let mut anyone = VirtualRouter::new(config("fe80::a", 100, true));
    anyone.start(start);
    let down = anyone.poll_timeout().unwrap();
    assert_eq!(
        anyone.handle_advertisement(addr("fe80::b"), &earlier, heard_at),
        Err(Discarded::AddressMismatch)
    );
    assert_eq!(anyone.poll_timeout(), Some(down));
}

#[test]
fn after_a_split_the_higher_master_announces_again_and_the_lower_steps_down() {
    // Both masters (their advertisements were lost both ways): when they
    // hear each other, the lower steps down and the higher announces the
    // addresses again, since the neighbours may follow the lower one.
    let mut link = Link::new(vec![
        config("fe80::a", 200, false),
        config("fe80::b", 100, false),
    ]);
    link.muted = vec![true, true];
    link.start_all();
    link.run_for(Duration::from_secs(5));
    assert_eq!(link.states(), [State::Master, State::Master]);
    // b's advertisements reach a first.
    link.muted = vec![true, false];
    link.run_for(Duration::from_secs(1));
    assert_eq!(link.states(), [State::Master, State::Master]);
    link.muted = vec![false, false];
    link.run_for(Duration::from_secs(3));
    assert_eq!(link.states(), [State::Master, State::Backup]);
    assert!(link
        .log
        .iter()
        .any(|(_, who, action)| *who == 0 && *action == Action::Reannounce));
    assert!(link.log.iter().any(|(_, who, action)| *who == 1
        && matches!(
            action,
            Action::StepDown(Stepdown::Preempted { priority: 200, .. })
        )));
}

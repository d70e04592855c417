//! `nemoctl handovers`: the tenants' moves as the home agents reported
//! them, one line each, from the controller's event history (and, with
//! --follow, as they happen): when, which tenant and home address, whether
//! it registered, moved or left, from which care-of address to which, the
//! sequence number, and how long after the placement (the orchestrator
//! telling the controller) the home agent reported the new binding.

use std::collections::HashMap;

use nemo_proto::v1 as pb;
use serde_json::Value;

/// What a binding report was, for its tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Move {
    /// Its first binding (or the first since it left).
    Registered,
    /// From another care-of address.
    Moved { from: String },
    /// Its binding ended.
    Left,
}

/// One line of the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    pub at_unix_ms: i64,
    pub tenant: Option<String>,
    pub home_address: String,
    pub what: Move,
    pub care_of: String,
    pub sequence: Option<u64>,
    /// From the tenant's last placement, when it came before this report.
    pub after_placement_ms: Option<i64>,
}

/// Reads the history in order and says the handovers in it.
#[derive(Debug, Default)]
pub struct Handovers {
    tenant_of: HashMap<String, String>,
    care_of: HashMap<String, String>,
    placed_at: HashMap<String, i64>,
}

/// An event's detail: the change, its fields beside its `kind`.
fn content(event: &pb::Event) -> Option<Value> {
    serde_json::from_str::<Value>(&event.detail_json)
        .ok()
        .filter(Value::is_object)
}

fn text(value: &Value, key: &str) -> Option<String> {
    value.get(key)?.as_str().map(str::to_owned)
}

impl Handovers {
    /// The handover `event` is, if it is one.
    pub fn hear(&mut self, event: &pb::Event) -> Option<Handover> {
        let detail = content(event)?;
        match event.kind.as_str() {
            "mobile_router_created" | "key_rotated" => {
                let (tenant, home) = (text(&detail, "tenant")?, text(&detail, "home_address")?);
                self.tenant_of.insert(home, tenant);
                None
            }
            "tenant_placed" => {
                let tenant = text(detail.get("placement")?, "tenant")?;
                self.placed_at.insert(tenant, event.at_unix_ms);
                None
            }
            "binding_reported" => {
                let home = text(&detail, "home_address")?;
                let care_of = text(&detail, "care_of")?;
                let removed = detail.get("removed").and_then(Value::as_bool) == Some(true);
                let tenant = self.tenant_of.get(&home).cloned();
                let what = if removed {
                    self.care_of.remove(&home);
                    Move::Left
                } else {
                    match self.care_of.insert(home.clone(), care_of.clone()) {
                        Some(from) if from == care_of => return None, // a refresh
                        Some(from) => Move::Moved { from },
                        None => Move::Registered,
                    }
                };
                let after_placement_ms = tenant
                    .as_ref()
                    .and_then(|t| self.placed_at.remove(t))
                    .filter(|_| what != Move::Left)
                    .map(|placed| event.at_unix_ms - placed);
                Some(Handover {
                    at_unix_ms: event.at_unix_ms,
                    tenant,
                    home_address: home,
                    what,
                    care_of,
                    sequence: detail.get("sequence").and_then(Value::as_u64),
                    after_placement_ms,
                })
            }
            _ => None,
        }
    }
}

impl Handover {
    /// Its JSON object (one a line with --output json).
    pub fn json(&self) -> Value {
        let (what, from) = match &self.what {
            Move::Registered => ("registered", None),
            Move::Moved { from } => ("moved", Some(from.clone())),
            Move::Left => ("left", None),
        };
        serde_json::json!({
            "at_unix_ms": self.at_unix_ms,
            "tenant": self.tenant,
            "home_address": self.home_address,
            "what": what,
            "from_care_of": from,
            "care_of": self.care_of,
            "sequence": self.sequence,
            "after_placement_ms": self.after_placement_ms,
        })
    }

    /// Its table row.
    pub fn row(&self) -> Vec<String> {
        let (what, from) = match &self.what {
            Move::Registered => ("registered", "-".to_owned()),
            Move::Moved { from } => ("moved", from.clone()),
            Move::Left => ("left", "-".to_owned()),
        };
        vec![
            crate::output::utc(self.at_unix_ms),
            self.tenant.clone().unwrap_or_else(|| "-".into()),
            self.home_address.clone(),
            what.to_owned(),
            from,
            self.care_of.clone(),
            self.sequence.map_or("-".into(), |s| s.to_string()),
            self.after_placement_ms
                .map_or("-".into(), |ms| format!("{ms} ms")),
        ]
    }
}

/// The table's columns.
pub const COLUMNS: &[&str] = &[
    "TIME",
    "TENANT",
    "HOME ADDRESS",
    "WHAT",
    "FROM",
    "CARE-OF",
    "SEQ",
    "AFTER PLACEMENT",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn event(at: i64, kind: &str, detail: Value) -> pb::Event {
        pb::Event {
            revision: 0,
            at_unix_ms: at,
            kind: kind.into(),
            subject: String::new(),
            detail_json: detail.to_string(),
            request_id: String::new(),
        }
    }

    fn report(at: i64, care_of: &str, removed: bool) -> pb::Event {
        event(
            at,
            "binding_reported",
            serde_json::json!({"kind": "binding_reported", "home_agent": "ha1", "home_address": "2001:db8:1::100",
                "care_of": care_of, "prefixes": [], "removed": removed, "reason": "", "sequence": 7}),
        )
    }

    #[test]
    fn a_tenant_registers_moves_refreshes_and_leaves() {
        let mut view = Handovers::default();
        let created = event(
            1,
            "mobile_router_created",
            serde_json::json!({"kind": "mobile_router_created", "tenant": "acme", "home_address": "2001:db8:1::100"}),
        );
        assert_eq!(view.hear(&created), None);
        let placed = |at| {
            event(
                at,
                "tenant_placed",
                serde_json::json!({"kind": "tenant_placed", "placement": {"tenant": "acme", "hypervisor": "hv-a"}, "from": null}),
            )
        };
        assert_eq!(view.hear(&placed(10)), None);
        let first = view.hear(&report(14, "2001:db8:2::10", false)).unwrap();
        assert_eq!(first.what, Move::Registered);
        assert_eq!(first.tenant.as_deref(), Some("acme"));
        assert_eq!(first.after_placement_ms, Some(4));
        // A refresh at the same care-of address is no handover.
        assert_eq!(view.hear(&report(20, "2001:db8:2::10", false)), None);
        view.hear(&placed(100));
        let moved = view.hear(&report(109, "2001:db8:3::10", false)).unwrap();
        assert_eq!(
            moved.what,
            Move::Moved {
                from: "2001:db8:2::10".into()
            }
        );
        assert_eq!(moved.after_placement_ms, Some(9));
        assert_eq!(moved.json()["from_care_of"], "2001:db8:2::10");
        let left = view.hear(&report(200, "2001:db8:3::10", true)).unwrap();
        assert_eq!(left.what, Move::Left);
        assert_eq!(left.after_placement_ms, None);
        // After leaving, the next binding is a registration again.
        let again = view.hear(&report(300, "2001:db8:3::10", false)).unwrap();
        assert_eq!(again.what, Move::Registered);
    }

    #[test]
    fn other_events_and_unreadable_details_are_not_handovers() {
        let mut view = Handovers::default();
        assert_eq!(
            view.hear(&event(
                1,
                "tenant_created",
                serde_json::json!({"TenantCreated": {"name": "x"}})
            )),
            None
        );
        let mut garbled = report(2, "2001:db8:2::10", false);
        garbled.detail_json = "not json".into();
        assert_eq!(view.hear(&garbled), None);
    }
}

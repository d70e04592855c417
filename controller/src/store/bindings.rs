//! Binding reports from the home agents.

use super::{
    check_name, check_reason, encode, Store, StoreChange, StoreError, MAX_REPORTED_PREFIXES,
};

impl Store {
    /// Records a binding change a home agent reported (history only).
    pub async fn report_binding(&self, change: StoreChange) -> Result<u64, StoreError> {
        self.retrying(|| self.report_binding_once(change.clone()))
            .await
    }

    async fn report_binding_once(&self, change: StoreChange) -> Result<u64, StoreError> {
        let StoreChange::BindingReported {
            home_agent,
            home_address,
            sequence,
            ..
        } = &change
        else {
            return Err(StoreError::Invalid {
                field: "change",
                reason: "not a binding report".into(),
            });
        };
        let (home_address, sequence) = (*home_address, *sequence);
        check_name("home_agent", home_agent)?;
        if let StoreChange::BindingReported {
            prefixes, reason, ..
        } = &change
        {
            check_reason("reason", reason)?;
            if prefixes.len() > MAX_REPORTED_PREFIXES {
                return Err(StoreError::Invalid {
                    field: "prefixes",
                    reason: format!(
                        "{} prefixes; at most {MAX_REPORTED_PREFIXES}",
                        prefixes.len()
                    ),
                });
            }
        }
        let state = self.state.lock().await;
        if !state.home_agents.contains_key(home_agent) {
            return Err(StoreError::NotFound {
                what: "home agent",
                name: home_agent.clone(),
            });
        }
        let record = sequence.map(|s| encode(&s)).transpose()?;
        let event = self
            .change(
                state,
                change,
                |t| {
                    if let Some(record) = &record {
                        t.sequences.insert(&home_address.octets(), record.clone());
                    }
                    Ok(())
                },
                |state| {
                    if let Some(sequence) = sequence {
                        state.last_sequence.insert(home_address, sequence);
                    }
                },
            )
            .await?;
        Ok(event.revision)
    }
}

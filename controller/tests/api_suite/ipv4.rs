// IPv4 pools and mappings through the API (issue 31, item 1): included by
// api_suite/mod.rs, so it runs on both backends.

/// An IPv4 pool, a tenant's IPv4 address mapped into its prefix: the
/// answers, the errors naming their field, the home agent's stream (the
/// snapshot and live), the history, `nemoctl ipv4` and `nemoctl status`,
/// and the release into quarantine.
#[tokio::test]
async fn ipv4_mappings_reach_the_home_agent_and_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let Some(backend) = Backend::start() else {
        return;
    };
    let server = start(dir.path(), &backend);
    let mut c = client(&server).await;
    world(&mut c).await;
    let pool = c
        .create_pool(authed(pb::CreatePoolRequest {
            name: "v4".into(),
            prefix: "192.0.2.0/28".into(),
            tenant_length: 0,
            translation_prefix: "2001:db8:64::/96".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (pool.tenant_length, pool.capacity, pool.translation_prefix.as_str()),
        (32, 16, "2001:db8:64::/96")
    );
    // Refused, naming the field.
    for (request, expected, field) in [
        (
            ("w", "192.0.2.0/24", 0, ""),
            Code::FailedPrecondition,
            "prefix: 192.0.2.0/24 overlaps",
        ),
        (
            ("w", "198.51.100.0/24", 0, "2001:db8:64::/64"),
            Code::InvalidArgument,
            "translation_prefix",
        ),
        (
            ("w", "2001:db8:900::/40", 56, "64:ff9b::/96"),
            Code::InvalidArgument,
            "translation_prefix",
        ),
        (
            ("w", "127.0.0.0/24", 0, ""),
            Code::InvalidArgument,
            "prefix",
        ),
        (
            ("w", "198.51.100.0/24", 33, ""),
            Code::InvalidArgument,
            "tenant_length",
        ),
    ] {
        let (status, message) = code(
            c.create_pool(authed(pb::CreatePoolRequest {
                name: request.0.into(),
                prefix: request.1.into(),
                tenant_length: request.2,
                translation_prefix: request.3.into(),
            }))
            .await,
        )
        .await;
        assert_eq!(status, expected, "{request:?}: {message}");
        assert!(message.starts_with(field), "{request:?}: {message}");
    }
    let mut authorizations = c
        .watch_authorizations(authed(pb::WatchAuthorizationsRequest {
            home_agent: "ha1".into(),
            from_revision: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    let first = authorizations.message().await.unwrap().unwrap();
    assert!(first.ipv4_mappings.is_empty(), "{first:?}");
    assert!(authorizations.message().await.unwrap().unwrap().snapshot_end);

    let allocate = |ipv4: &str, length: u32, ipv6: &str| pb::AllocateIpv4Request {
        tenant: "acme".into(),
        pool: "v4".into(),
        length,
        ipv4: ipv4.into(),
        ipv6: ipv6.into(),
    };
    let mapped = c
        .allocate_ipv4(authed(allocate("", 0, "2001:db8:100::10")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            mapped.ipv4.as_str(),
            mapped.ipv6.as_str(),
            mapped.translation_prefix.as_str()
        ),
        ("192.0.2.0/32", "2001:db8:100::10/128", "2001:db8:64::/96")
    );
    // The home agent hears it with the tenant's authorization.
    let update = authorizations.message().await.unwrap().unwrap();
    assert_eq!(update.home_address, "2001:db8:1::100");
    assert!(update.mobile_router.is_some());
    assert_eq!(update.ipv4_mappings, vec![mapped.clone()]);
    let block = c
        .allocate_ipv4(authed(allocate("192.0.2.4/30", 0, "2001:db8:100::20/126")))
        .await
        .unwrap()
        .into_inner();
    let update = authorizations.message().await.unwrap().unwrap();
    assert_eq!(update.ipv4_mappings.len(), 2, "{update:?}");
    assert!(update.ipv4_mappings.contains(&block));
    for (request, expected, field) in [
        (allocate("", 0, "2001:db8:100::10"), Code::FailedPrecondition, "ipv6"),
        (allocate("", 0, "2001:db8:200::1"), Code::FailedPrecondition, "ipv6"),
        (allocate("", 0, "2001:db8:100::/126"), Code::InvalidArgument, "ipv6"),
        (allocate("192.0.2.5", 0, "2001:db8:100::30"), Code::FailedPrecondition, "ipv4"),
        (allocate("198.51.100.1", 0, "2001:db8:100::30"), Code::InvalidArgument, "ipv4"),
        (allocate("192.0.2.9", 30, "2001:db8:100::30"), Code::InvalidArgument, "length"),
        (allocate("", 0, &"1".repeat(100)), Code::InvalidArgument, "ipv6"),
        (
            pb::AllocateIpv4Request {
                pool: "core".into(),
                ..allocate("", 0, "2001:db8:100::30")
            },
            Code::InvalidArgument,
            "pool",
        ),
        (
            pb::AllocateIpv4Request {
                tenant: "nobody".into(),
                ..allocate("", 0, "2001:db8:100::30")
            },
            Code::NotFound,
            "nobody",
        ),
    ] {
        let (status, message) = code(c.allocate_ipv4(authed(request.clone())).await).await;
        assert_eq!(status, expected, "{request:?}: {message}");
        assert!(message.contains(field), "{request:?}: {message}");
    }
    // The tenant's prefix holds a mapping: not released under it.
    let (status, message) = code(
        c.release_prefix(authed(pb::ReleasePrefixRequest {
            prefix: "2001:db8:100::/56".into(),
        }))
        .await,
    )
    .await;
    assert_eq!(status, Code::FailedPrecondition, "{message}");
    assert!(message.contains("192.0.2.0/32"), "{message}");
    let tenant = c
        .get_tenant(authed(pb::GetTenantRequest {
            name: "acme".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tenant.ipv4_mappings.len(), 2);

    // nemoctl: the same, and the overview.
    let endpoint = format!("http://{}", server.field("grpc"));
    let nemoctl = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_nemoctl"))
            .args(["--endpoint", &endpoint])
            .args(args)
            .env("NEMO_TOKEN", TOKEN)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let out = nemoctl(&[
        "-o", "json", "ipv4", "allocate", "acme", "--pool", "v4", "--to", "2001:db8:100::11",
    ]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    // After the last taken (the /30): as prefixes are.
    assert_eq!(json[0]["ipv4"], "192.0.2.8/32", "{out}");
    let out = nemoctl(&["ipv4", "list", "acme"]);
    assert_eq!(out.lines().count(), 1 + 3, "{out}");
    let out = nemoctl(&["-o", "json", "status"]);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let acme = status["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "acme")
        .unwrap_or_else(|| panic!("{out}"))
        .clone();
    assert_eq!(acme["ipv4_mappings"].as_array().unwrap().len(), 3, "{out}");
    let out = nemoctl(&["status"]);
    assert!(
        out.contains("192.0.2.0/32=2001:db8:100::10/128"),
        "{out}"
    );
    let out = nemoctl(&["pool", "list"]);
    assert!(out.contains("2001:db8:64::/96"), "{out}");

    // Released: held back, the home agent told, the history has both.
    let released = c
        .release_ipv4(authed(pb::ReleaseIpv4Request {
            ipv4: "192.0.2.0".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .released
        .unwrap();
    assert_eq!(released, mapped);
    loop {
        let update = authorizations.message().await.unwrap().unwrap();
        if update.ipv4_mappings.len() == 2 {
            assert!(!update.ipv4_mappings.contains(&mapped));
            break;
        }
    }
    let (status, message) = code(
        c.allocate_ipv4(authed(allocate("192.0.2.0", 0, "2001:db8:100::10")))
            .await,
    )
    .await;
    assert_eq!(status, Code::FailedPrecondition, "{message}");
    assert!(message.contains("held back"), "{message}");
    let pool = c
        .get_pool(authed(pb::GetPoolRequest { name: "v4".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((pool.allocated, pool.quarantined), (2, 1));
    let mut stream = c
        .watch_events(authed(pb::WatchEventsRequest {
            from_revision: 0,
            history_only: true,
        }))
        .await
        .unwrap()
        .into_inner();
    let mut history = Vec::new();
    while let Some(event) = stream.message().await.unwrap() {
        history.push(event);
    }
    let kinds: Vec<&str> = history.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "ipv4_mapped").count(), 3);
    assert_eq!(kinds.last(), Some(&"ipv4_released"), "{kinds:?}");

    // Deleting the tenant with cascade takes its mappings first.
    let deleted = c
        .delete_mobile_router(authed(pb::DeleteMobileRouterRequest {
            tenant: "acme".into(),
        }))
        .await;
    assert!(deleted.is_ok());
    let released = c
        .delete_tenant(authed(pb::DeleteTenantRequest {
            name: "acme".into(),
            cascade: true,
        }))
        .await
        .unwrap()
        .into_inner()
        .released;
    assert_eq!(
        released,
        ["192.0.2.4/30", "192.0.2.8/32", "2001:db8:100::/56"]
    );
    let listed = c
        .list_ipv4_mappings(authed(pb::ListIpv4MappingsRequest {
            tenant: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .mappings;
    assert!(listed.is_empty(), "{listed:?}");
}

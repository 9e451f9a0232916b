//! The WPR profile (`scripts/ntosebpfext.wprp`) is well-formed XML whose
//! profiles WPR can resolve, and enables the driver's provider with the
//! keywords libs/ebpf_ext/src/trace.rs writes (and eBPF for Windows' execution context
//! where it says so).
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use ebpf_ext::trace::keyword;
use std::collections::BTreeMap;

const WPRP: &str = include_str!("../scripts/ntosebpfext.wprp");
/// `EbpfForWindowsProvider`, eBPF for Windows' execution context.
const EXECUTION_CONTEXT: &str = "394f321c-5cf4-404c-aa34-4df1428a7f9c";

fn provider_guid() -> String {
    let g = ntosebpfext::TRACE.guid();
    let d = g.data4;
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        g.data1, g.data2, g.data3, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]
    )
}

fn parse_u64(v: &str) -> u64 {
    let hex = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X"));
    match hex {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse(),
    }
    .unwrap_or_else(|e| panic!("keyword {v:?}: {e}"))
}

/// A provider as a profile enables it.
#[derive(Debug)]
struct Provider {
    guid: String,
    level: Option<u8>,
    keywords: Option<u64>,
}

#[test]
fn the_profile_is_well_formed_and_names_the_drivers_provider() {
    let doc = roxmltree::Document::parse(WPRP).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "WindowsPerformanceRecorder");
    let ours = provider_guid();
    assert_eq!(ours, "d15cc421-e9e4-459b-87a6-b45b7d84e9a8");

    let mut providers = BTreeMap::new();
    let mut collectors = Vec::new();
    for node in root.descendants().filter(|n| n.is_element()) {
        match node.tag_name().name() {
            "EventProvider" => {
                let id = node.attribute("Id").expect("EventProvider Id");
                let keywords = node
                    .descendants()
                    .filter(|k| k.has_tag_name("Keyword"))
                    .map(|k| parse_u64(k.attribute("Value").expect("Keyword Value")))
                    .reduce(|a, b| a | b);
                let provider = Provider {
                    guid: node
                        .attribute("Name")
                        .expect("EventProvider Name")
                        .to_lowercase(),
                    level: node.attribute("Level").map(|l| l.parse().expect("a level")),
                    keywords,
                };
                assert!(
                    providers.insert(id.to_string(), provider).is_none(),
                    "{id} twice"
                );
            }
            "EventCollector" => collectors.push(node.attribute("Id").expect("collector Id")),
            _ => {}
        }
    }

    let mut profiles = BTreeMap::new();
    for profile in root.descendants().filter(|n| n.has_tag_name("Profile")) {
        let id = profile.attribute("Id").expect("Profile Id");
        let name = profile.attribute("Name").expect("Profile Name");
        let detail = profile.attribute("DetailLevel").expect("DetailLevel");
        let mode = profile.attribute("LoggingMode").expect("LoggingMode");
        assert_eq!(id, format!("{name}.{detail}.{mode}"), "WPR's Id rule");
        let mut enabled = Vec::new();
        for c in profile
            .descendants()
            .filter(|n| n.has_tag_name("EventCollectorId"))
        {
            let value = c.attribute("Value").unwrap();
            assert!(
                collectors.contains(&value),
                "{id}: unknown collector {value}"
            );
        }
        for p in profile
            .descendants()
            .filter(|n| n.has_tag_name("EventProviderId"))
        {
            let value = p.attribute("Value").unwrap();
            let provider = providers
                .get(value)
                .unwrap_or_else(|| panic!("{id}: unknown provider {value}"));
            enabled.push(provider);
        }
        profiles.insert(id.to_string(), enabled);
    }

    let ours_in = |profile: &str| -> &Provider {
        let enabled = profiles
            .get(profile)
            .unwrap_or_else(|| panic!("no profile {profile}"));
        enabled
            .iter()
            .find(|p| p.guid == ours)
            .unwrap_or_else(|| panic!("{profile} does not enable {ours}"))
    };
    let driver_keywords = keyword::BASE | keyword::EXTENSION | keyword::PROCESS;
    for mode in ["File", "Memory"] {
        let plain = ours_in(&format!("NtosEbpfExt.Verbose.{mode}"));
        assert_eq!(plain.level, Some(5));
        let k = plain.keywords.expect("explicit keywords");
        assert_eq!(k & driver_keywords, driver_keywords);
        assert_eq!(k & keyword::HOOK_EVENTS, 0, "no per-event records");

        let events = ours_in(&format!("NtosEbpfExt-Events.Verbose.{mode}"));
        let k = events.keywords.expect("explicit keywords");
        assert_eq!(
            k & (driver_keywords | keyword::HOOK_EVENTS),
            driver_keywords | keyword::HOOK_EVENTS
        );

        let with_ebpf = format!("NtosEbpfExt-Ebpf.Verbose.{mode}");
        assert_eq!(ours_in(&with_ebpf).keywords, plain.keywords);
        assert!(
            profiles[&with_ebpf]
                .iter()
                .any(|p| p.guid == EXECUTION_CONTEXT),
            "{with_ebpf} enables the execution context"
        );
    }
}

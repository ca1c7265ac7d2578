use super::*;

/// Validates `toml` as if it were `/etc/tributary/tributary.toml`, with
/// no `STATE_DIRECTORY`.
fn load(toml: &str) -> Result<Config, ConfigError> {
    from_toml_with_env(toml, Some(Path::new("/etc/tributary/tributary.toml")), None)
}

fn ok(toml: &str) -> Config {
    match load(toml) {
        Ok(config) => config,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

fn problems(toml: &str) -> Vec<Problem> {
    match load(toml) {
        Ok(config) => panic!("expected problems, got {config:#?}"),
        Err(ConfigError::Invalid { problems, .. }) => problems,
        Err(e) => panic!("expected ConfigError::Invalid, got {e:?}"),
    }
}

/// Asserts that `toml` has exactly one problem, at `key` on `line`, and
/// returns its message for further checks.
#[track_caller]
fn check_err(toml: &str, key: &str, line: usize) -> String {
    let problems = problems(toml);
    assert_eq!(problems.len(), 1, "expected one problem, got {problems:#?}");
    let p = &problems[0];
    assert_eq!(
        (p.key.as_str(), p.line),
        (key, Some(line)),
        "wrong key or line for problem: {}",
        p.message
    );
    p.message.clone()
}

#[test]
fn empty_file_gives_every_default() {
    let config = ok("");
    assert_eq!(
        config.path.as_deref(),
        Some(Path::new("/etc/tributary/tributary.toml"))
    );
    assert_eq!(
        config.database.sqlite_path(),
        Some(Path::new("/etc/tributary/tributary.db"))
    );
    let server = &config.server;
    assert_eq!(server.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(server.base_url.as_str(), "http://127.0.0.1:8080/");
    assert_eq!(server.title, "Tributary");
    assert_eq!(server.page_size, 50);
    assert_eq!(server.max_page_size, 500);
    assert_eq!(server.websub_hub, None);
    let poll = &config.poll;
    assert_eq!(poll.interval, Duration::from_secs(3600));
    assert_eq!(poll.min_interval, Duration::from_secs(300));
    assert_eq!(poll.timeout, Duration::from_secs(30));
    assert_eq!(poll.connect_timeout, Duration::from_secs(10));
    assert_eq!(poll.lease_margin, Duration::from_secs(60));
    assert_eq!(poll.concurrency, 8);
    assert_eq!(poll.max_body, 10_000_000);
    assert_eq!(poll.user_agent, DEFAULT_USER_AGENT);
    assert!(poll.adaptive);
    assert_eq!(poll.max_interval, Duration::from_secs(86_400));
    assert_eq!(poll.max_backoff, Duration::from_secs(86_400));
    assert_eq!(poll.per_host_concurrency, 1);
    assert_eq!(poll.per_host_spacing, Duration::from_secs(1));
    assert_eq!(config.log.level, "info");
    assert_eq!(config.log.format, LogFormat::Text);
    assert!(config.network.allow.is_empty());
    assert!(config.extract.full_text);
    assert_eq!(config.extract.max_attempts, 4);
    assert_eq!(config.extract.concurrency, 4);
    let retention = &config.retention;
    assert_eq!(retention.max_age, Some(Duration::from_secs(180 * 86_400)));
    assert_eq!(retention.max_entries_per_feed, Some(1_000));
    assert_eq!(retention.max_database_size, Some(1_000_000_000));
    assert_eq!(
        retention.tombstone_max_age,
        Some(Duration::from_secs(365 * 86_400))
    );
    assert_eq!(retention.max_tombstones, Some(500_000));
    assert_eq!(retention.housekeeping_interval, Duration::from_secs(86_400));
    assert!(config.feeds.is_empty());
    assert!(config.sites.is_empty());
    assert!(config.outputs.is_empty());

    // default_for is what an empty file gives (modulo the environment,
    // which only affects `database`).
    let default = defaults(Some(Path::new("/etc/tributary/tributary.toml")), None);
    assert_eq!(config, default);
}

#[test]
fn default_user_agent_names_version_and_project() {
    assert_eq!(
        DEFAULT_USER_AGENT,
        format!(
            "Tributary/{} (+{})",
            env!("CARGO_PKG_VERSION"),
            DEFAULT_USER_AGENT_PROJECT_URL
        )
    );
}

#[test]
fn every_key_is_parsed() {
    let config = ok(r#"
database = "data/feeds.db"

[server]
listen = "0.0.0.0:9000"
base_url = "https://feeds.example.com/river/"
title = "  My River  "
page_size = 20
max_page_size = 100
websub_hub = " https://hub.example.com/publish?x=1 "

[poll]
interval = "2h"
min_interval = "1s"
timeout = "1m"
connect_timeout = "5s"
concurrency = 16
max_body = "5MiB"
user_agent = "MyBot/1.0"
adaptive = false
max_interval = "12h"
max_backoff = "6h"
per_host_concurrency = 2
per_host_spacing = "250ms"
lease_margin = "45s"

[log]
level = "info,tributary=debug"
format = "json"

[network]
allow = ["192.168.1.7/24", "fd00::/8", "10.0.0.5", "::1", " NAS.Local. ", "nas.local"]

[extract]
full_text = false
max_attempts = 7
concurrency = 2

[[feed]]
url = "https://blog.rust-lang.org/feed.xml"
title = "Rust Blog"
tags = [" rust ", "lang", "rust"]
interval = "30m"
full_text = true

[[feed]]
url = "HTTPS://LWN.net/headlines/rss"

[[site]]
host = "Example.COM"
keep = ["article .post-body", "main"]
drop = [".comments", "div#share > a"]

[[site]]
host = "lwn.net."
drop = ["table.Form"]

[[output]]
name = "rust-news_2"
title = "  Rust news  "
tags = [" rust ", "lang", "rust"]
feeds = ["HTTPS://Blog.Rust-Lang.org/feed.xml", "https://lwn.net", "https://lwn.net/"]
include = '(?i)\b(rust|cargo)\b'
exclude = ' sponsored '
limit = 100

[[output]]
name = "all"
"#);
    assert_eq!(
        config.database.sqlite_path(),
        Some(Path::new("/etc/tributary/data/feeds.db"))
    );
    assert_eq!(
        config.server,
        ServerConfig {
            listen: "0.0.0.0:9000".parse().unwrap(),
            base_url: Url::parse("https://feeds.example.com/river").unwrap(),
            title: "My River".into(),
            page_size: 20,
            max_page_size: 100,
            websub_hub: Some(Url::parse("https://hub.example.com/publish?x=1").unwrap()),
        }
    );
    assert_eq!(
        config.poll,
        PollConfig {
            interval: Duration::from_secs(7200),
            min_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            concurrency: 16,
            max_body: 5 * 1024 * 1024,
            user_agent: "MyBot/1.0".into(),
            adaptive: false,
            max_interval: Duration::from_secs(12 * 3600),
            max_backoff: Duration::from_secs(6 * 3600),
            per_host_concurrency: 2,
            per_host_spacing: Duration::from_millis(250),
            lease_margin: Duration::from_secs(45),
        }
    );
    assert_eq!(
        config.log,
        LogConfig {
            level: "info,tributary=debug".into(),
            format: LogFormat::Json
        }
    );
    assert_eq!(
        config.feeds,
        vec![
            FeedSpec {
                url: "https://blog.rust-lang.org/feed.xml".into(),
                title: Some("Rust Blog".into()),
                tags: vec!["rust".into(), "lang".into()],
                interval: Some(Duration::from_secs(1800)),
                full_text: Some(true),
                request: Default::default(),
                rules: Default::default(),
                page: None,
            },
            FeedSpec {
                url: "https://lwn.net/headlines/rss".into(),
                title: None,
                tags: vec![],
                interval: None,
                full_text: None,
                request: Default::default(),
                rules: Default::default(),
                page: None,
            },
        ]
    );
    let net = |s: &str| AllowRule::Net(s.parse().unwrap());
    assert_eq!(
        config.network.allow,
        vec![
            net("192.168.1.0/24"),
            net("fd00::/8"),
            net("10.0.0.5/32"),
            net("::1/128"),
            AllowRule::Host("nas.local".into()),
        ]
    );
    assert_eq!(
        config.extract,
        ExtractConfig {
            full_text: false,
            max_attempts: 7,
            concurrency: 2,
        }
    );
    assert_eq!(
        config.sites,
        vec![
            SiteRule {
                host: "example.com".into(),
                keep: vec!["article .post-body".into(), "main".into()],
                drop: vec![".comments".into(), "div#share > a".into()],
                request: Default::default(),
            },
            SiteRule {
                host: "lwn.net".into(),
                keep: vec![],
                drop: vec!["table.Form".into()],
                request: Default::default(),
            },
        ]
    );
    assert_eq!(
        config.outputs,
        vec![
            OutputSpec {
                name: "rust-news_2".into(),
                title: Some("Rust news".into()),
                tags: vec!["rust".into(), "lang".into()],
                // Normalised like [[feed]] urls, duplicates dropped.
                feeds: vec![
                    "https://blog.rust-lang.org/feed.xml".into(),
                    "https://lwn.net/".into(),
                ],
                include: Some(r"(?i)\b(rust|cargo)\b".into()),
                // Spaces matter in a regex: kept as written.
                exclude: Some(" sponsored ".into()),
                limit: Some(100),
                webhook: vec![],
                webhook_secret: None,
                ntfy: vec![],
            },
            OutputSpec {
                name: "all".into(),
                title: None,
                tags: vec![],
                feeds: vec![],
                include: None,
                exclude: None,
                limit: None,
                webhook: vec![],
                webhook_secret: None,
                ntfy: vec![],
            },
        ]
    );
}

#[test]
fn base_url_defaults_to_listen_and_loses_trailing_slash() {
    let config = ok("[server]\nlisten = \"[::1]:8081\"\n");
    assert_eq!(config.server.base_url.as_str(), "http://[::1]:8081/");

    let base = |s: &str| {
        ok(&format!("[server]\nbase_url = \"{s}\"\n"))
            .server
            .base_url
            .to_string()
    };
    assert_eq!(base("https://example.com"), "https://example.com/");
    assert_eq!(base("https://example.com/"), "https://example.com/");
    assert_eq!(base("https://example.com/a/b/"), "https://example.com/a/b");
    assert_eq!(base("https://example.com/a//"), "https://example.com/a");
}

#[test]
fn url_for_joins_without_double_or_missing_slashes() {
    let server = |s: &str| ok(&format!("[server]\nbase_url = \"{s}\"\n")).server;
    let root = server("https://example.com/");
    assert_eq!(root.url_for("atom.xml"), "https://example.com/atom.xml");
    assert_eq!(root.url_for("/atom.xml"), "https://example.com/atom.xml");
    let sub = server("https://example.com/river/");
    assert_eq!(
        sub.url_for("atom.xml"),
        "https://example.com/river/atom.xml"
    );
    assert_eq!(
        sub.url_for("/atom.xml"),
        "https://example.com/river/atom.xml"
    );
}

#[test]
fn small_max_page_size_lowers_default_page_size() {
    let config = ok("[server]\nmax_page_size = 10\n");
    assert_eq!(config.server.page_size, 10);
    assert_eq!(config.server.max_page_size, 10);
}

#[test]
fn unknown_keys_are_named_with_their_line() {
    let msg = check_err("database = \"x.db\"\nfeeds = []\n", "feeds", 2);
    assert!(msg.contains("did you mean \"feed\"?"), "{msg}");

    let msg = check_err(
        "[server]\nlisten = \"127.0.0.1:1\"\nbase-url = \"http://x\"\n",
        "server.base-url",
        3,
    );
    assert!(msg.contains("did you mean \"base_url\"?"), "{msg}");

    let msg = check_err(
        "[[feed]]\nurl = \"https://a.example/\"\n\n[[feed]]\nurl = \"https://b.example/\"\ntag = [\"x\"]\n",
        "feed[1].tag",
        6,
    );
    assert!(msg.contains("did you mean \"tags\"?"), "{msg}");

    let msg = check_err("[server]\nuser_agent = \"x\"\n", "server.user_agent", 2);
    assert!(msg.contains("belongs in [poll]"), "{msg}");

    let msg = check_err("[log]\nwhatever = 1\n", "log.whatever", 2);
    assert!(msg.contains("known keys are level, format"), "{msg}");

    let msg = check_err(
        "[[output]]\nname = \"a\"\n\n[[output]]\nname = \"b\"\ntagz = [\"x\"]\n",
        "output[1].tagz",
        6,
    );
    assert!(
        msg.contains("unknown key \"tagz\": did you mean \"tags\"?"),
        "{msg}"
    );
    let msg = check_err(
        "[[output]]\nname = \"a\"\nfeed = [\"https://a.example/\"]\n",
        "output[0].feed",
        3,
    );
    assert!(msg.contains("did you mean \"feeds\"?"), "{msg}");
    let msg = check_err(
        "[[output]]\nname = \"a\"\nfull_text = true\n",
        "output[0].full_text",
        3,
    );
    assert!(msg.contains("belongs in [extract] or [[feed]]"), "{msg}");
    let msg = check_err("outputs = []\n", "outputs", 1);
    assert!(msg.contains("did you mean \"output\"?"), "{msg}");
    let msg = check_err(
        "[server]\nwebsub_hubs = \"https://hub.example/\"\n",
        "server.websub_hubs",
        2,
    );
    assert!(msg.contains("did you mean \"websub_hub\"?"), "{msg}");
    let msg = check_err(
        "[[output]]\nname = \"a\"\nwebsub_hub = \"https://hub.example/\"\n",
        "output[0].websub_hub",
        3,
    );
    assert!(msg.contains("belongs in [server]"), "{msg}");

    let msg = check_err("\n[extract]\nenabled = true\n", "extract.enabled", 3);
    assert!(
        msg.contains("known keys are full_text, max_attempts, concurrency"),
        "{msg}"
    );
    let msg = check_err("[network]\nallowed = []\n", "network.allowed", 2);
    assert!(msg.contains("did you mean \"allow\"?"), "{msg}");
    let msg = check_err(
        "[[site]]\nhost = \"a.example\"\nkeeps = [\"p\"]\n",
        "site[0].keeps",
        3,
    );
    assert!(msg.contains("did you mean \"keep\"?"), "{msg}");
    let msg = check_err("[poll]\nmax_attempts = 3\n", "poll.max_attempts", 2);
    assert!(msg.contains("belongs in [extract]"), "{msg}");
    let msg = check_err("sites = []\n", "sites", 1);
    assert!(msg.contains("did you mean \"site\"?"), "{msg}");
}

// One case per line: a table reads better than rustfmt's layout.
#[rustfmt::skip]
    #[test]
    fn wrong_types_are_reported() {
        let cases: &[(&str, &str, usize, &str)] = &[
            ("database = 1", "database", 1, "expected a string, found an integer"),
            ("server = 1", "server", 1, "expected a table ([server])"),
            ("[server]\npage_size = \"10\"", "server.page_size", 2, "expected an integer, found a string"),
            ("[server]\nmax_page_size = 1.5", "server.max_page_size", 2, "found a float"),
            ("[poll]\nconcurrency = true", "poll.concurrency", 2, "found a boolean"),
            ("[poll]\ninterval = 3600", "poll.interval", 2, "\"3600s\""),
            ("[poll]\nmax_body = [1]", "poll.max_body", 2, "found an array"),
            ("[log]\nformat = 1979-05-27", "log.format", 2, "found a datetime"),
            ("[feed]\nurl = \"https://a.example/\"", "feed", 1, "[[feed]], not [feed]"),
            ("feed = [1]", "feed[0]", 1, "expected a table"),
            ("[[feed]]\nurl = \"https://a.example/\"\ntags = \"rust\"", "feed[0].tags", 3, "[\"rust\"]"),
            ("[[feed]]\nurl = \"https://a.example/\"\ntags = [\"ok\", 2]", "feed[0].tags[1]", 3, "found an integer"),
            ("[poll]\nadaptive = \"yes\"", "poll.adaptive", 2, "expected a boolean, found a string: write true or false without quotes, not \"yes\""),
            ("[poll]\nadaptive = 1", "poll.adaptive", 2, "expected a boolean (true or false), found an integer"),
            ("[poll]\nper_host_concurrency = \"2\"", "poll.per_host_concurrency", 2, "expected an integer, found a string"),
            ("[poll]\nper_host_spacing = 1", "poll.per_host_spacing", 2, "\"1s\""),
            ("[poll]\nmax_interval = 86400", "poll.max_interval", 2, "\"86400s\""),
            ("[poll]\nmax_backoff = true", "poll.max_backoff", 2, "found a boolean"),
            ("network = 1", "network", 1, "expected a table ([network])"),
            ("[network]\nallow = \"10.0.0.0/8\"", "network.allow", 2, "[\"10.0.0.0/8\"]"),
            ("[network]\nallow = [\"10.0.0.0/8\", 10]", "network.allow[1]", 2, "expected a string, found an integer"),
            ("extract = \"yes\"", "extract", 1, "expected a table ([extract])"),
            ("[extract]\nfull_text = \"false\"", "extract.full_text", 2, "without quotes"),
            ("[extract]\nmax_attempts = 2.5", "extract.max_attempts", 2, "found a float"),
            ("[extract]\nconcurrency = \"4\"", "extract.concurrency", 2, "found a string"),
            ("[[feed]]\nurl = \"https://a.example/\"\nfull_text = 0", "feed[0].full_text", 3, "found an integer"),
            ("[site]\nhost = \"a.example\"", "site", 1, "write each site as [[site]], not [site]"),
            ("site = [1]", "site[0]", 1, "expected a table"),
            ("site = 1", "site", 1, "expected an array of tables ([[site]])"),
            ("[[site]]\nhost = 1\nkeep = [\"p\"]", "site[0].host", 2, "expected a string"),
            ("[[site]]\nhost = \"a.example\"\nkeep = \"article\"", "site[0].keep", 3, "write it as [\"article\"]"),
            ("[[site]]\nhost = \"a.example\"\ndrop = [[\"p\"]]", "site[0].drop[0]", 3, "found an array"),
            ("[server]\nwebsub_hub = true", "server.websub_hub", 2, "expected a string, found a boolean"),
            ("[output]\nname = \"a\"", "output", 1, "write each output as [[output]], not [output]"),
            ("output = [1]", "output[0]", 1, "expected a table"),
            ("output = \"all\"", "output", 1, "expected an array of tables ([[output]])"),
            ("[[output]]\nname = 1", "output[0].name", 2, "expected a string, found an integer"),
            ("[[output]]\nname = \"a\"\ntitle = 1", "output[0].title", 3, "expected a string"),
            ("[[output]]\nname = \"a\"\ntags = \"rust\"", "output[0].tags", 3, "write it as [\"rust\"]"),
            ("[[output]]\nname = \"a\"\ntags = [\"ok\", 2]", "output[0].tags[1]", 3, "found an integer"),
            ("[[output]]\nname = \"a\"\nfeeds = \"https://a.example/\"", "output[0].feeds", 3, "write it as [\"https://a.example/\"]"),
            ("[[output]]\nname = \"a\"\nfeeds = [{ url = \"x\" }]", "output[0].feeds[0]", 3, "found a table"),
            ("[[output]]\nname = \"a\"\ninclude = [\"rust\"]", "output[0].include", 3, "expected a string, found an array"),
            ("[[output]]\nname = \"a\"\nexclude = 1", "output[0].exclude", 3, "expected a string, found an integer"),
            ("[[output]]\nname = \"a\"\nlimit = \"20\"", "output[0].limit", 3, "expected an integer, found a string"),
            ("[[output]]\nname = \"a\"\nlimit = 2.5", "output[0].limit", 3, "found a float"),
        ];
        for &(toml, key, line, needle) in cases {
            let msg = check_err(toml, key, line);
            assert!(msg.contains(needle), "{toml:?}: {msg:?} lacks {needle:?}");
        }
    }

#[rustfmt::skip]
    #[test]
    fn bad_values_are_reported() {
        let cases: &[(&str, &str, usize, &str)] = &[
            ("database = \" \"", "database", 1, "must not be empty"),
            ("[server]\nlisten = \"localhost:8080\"", "server.listen", 2, "HOST:PORT"),
            ("[server]\nlisten = \"127.0.0.1\"", "server.listen", 2, "invalid listen address"),
            ("[server]\nbase_url = \"example.com\"", "server.base_url", 2, "invalid URL"),
            ("[server]\nbase_url = \"ftp://example.com\"", "server.base_url", 2, "only http and https"),
            ("[server]\nbase_url = \"https://example.com/?a=1\"", "server.base_url", 2, "query"),
            ("[server]\ntitle = \"\"", "server.title", 2, "must not be empty"),
            ("[server]\npage_size = 0", "server.page_size", 2, "between 1 and max_page_size (500)"),
            ("[server]\npage_size = 600", "server.page_size", 2, "got 600"),
            ("[server]\nmax_page_size = 0", "server.max_page_size", 2, "at least 1"),
            ("[server]\nmax_page_size = 10\npage_size = 11", "server.page_size", 3, "max_page_size (10)"),
            ("[poll]\ninterval = \"5x\"", "poll.interval", 2, "invalid duration \"5x\": write it as 30s, 15m, 1h or 1h30m"),
            ("[poll]\ntimeout = \"-5s\"", "poll.timeout", 2, "negative"),
            ("[poll]\ntimeout = \"0s\"", "poll.timeout", 2, "longer than 0s"),
            ("[poll]\nlease_margin = \"0s\"", "poll.lease_margin", 2, "longer than 0s"),
            ("[poll]\nconnect_timeout = \"\"", "poll.connect_timeout", 2, "invalid duration"),
            ("[poll]\nmin_interval = \"500ms\"", "poll.min_interval", 2, "at least 1s"),
            ("[poll]\nconcurrency = 0", "poll.concurrency", 2, "between 1 and 1024"),
            ("[poll]\nconcurrency = 1025", "poll.concurrency", 2, "between 1 and 1024"),
            ("[poll]\nconcurrency = 99999999999999999999", "poll.concurrency", 2, "too large"),
            ("[poll]\nmax_body = \"10XB\"", "poll.max_body", 2, "invalid size \"10XB\""),
            ("[poll]\nmax_body = \"999B\"", "poll.max_body", 2, "at least 1KB"),
            ("[poll]\nmax_body = -1", "poll.max_body", 2, "negative"),
            ("[poll]\nuser_agent = \"\"", "poll.user_agent", 2, "must not be empty"),
            ("[log]\nlevel = \"\"", "log.level", 2, "must not be empty"),
            ("[log]\nformat = \"xml\"", "log.format", 2, "\"text\" or \"json\""),
            ("[[feed]]\nurl = \"not a url\"", "feed[0].url", 2, "invalid URL"),
            ("[[feed]]\nurl = \"file:///etc/passwd\"", "feed[0].url", 2, "only http and https"),
            ("[[feed]]\nurl = \"https://a.example/\"\ntitle = \" \"", "feed[0].title", 3, "must not be empty"),
            ("[[feed]]\nurl = \"https://a.example/\"\ntags = [\"\"]", "feed[0].tags[0]", 3, "must not be empty"),
            ("\n[[feed]]\ntitle = \"x\"", "feed[0].url", 2, "missing"),
            ("[[feed]]\nurl = \"https://a.example/\"\ninterval = \"2d\"", "feed[0].interval", 3, "interval (2d) is longer than poll.max_interval (1d)"),
            ("[poll]\nmax_interval = \"30m\"", "poll.max_interval", 2, "max_interval (30m) is shorter than interval (1h)"),
            ("[poll]\nmax_interval = \"0s\"", "poll.max_interval", 2, "max_interval (0s) is shorter than interval (1h)"),
            ("[poll]\nmax_interval = \"1x\"", "poll.max_interval", 2, "invalid duration"),
            ("[poll]\nmax_backoff = \"1m\"", "poll.max_backoff", 2, "max_backoff (1m) is shorter than min_interval (5m)"),
            ("[poll]\nmax_backoff = \"-1m\"", "poll.max_backoff", 2, "negative"),
            ("[poll]\nper_host_concurrency = 0", "poll.per_host_concurrency", 2, "between 1 and 1024, got 0"),
            ("[poll]\nper_host_concurrency = 1025", "poll.per_host_concurrency", 2, "between 1 and 1024, got 1025"),
            ("[poll]\nper_host_concurrency = -1", "poll.per_host_concurrency", 2, "got -1"),
            ("[poll]\nper_host_spacing = \"soon\"", "poll.per_host_spacing", 2, "invalid duration \"soon\""),
            ("[extract]\nmax_attempts = 0", "extract.max_attempts", 2, "between 1 and 20, got 0"),
            ("[extract]\nmax_attempts = 21", "extract.max_attempts", 2, "between 1 and 20, got 21"),
            ("[extract]\nconcurrency = 0", "extract.concurrency", 2, "between 1 and 1024, got 0"),
            ("[extract]\nconcurrency = 2000", "extract.concurrency", 2, "between 1 and 1024, got 2000"),
            ("[network]\nallow = [\"10.0.0.0/33\"]", "network.allow[0]", 2, "invalid network \"10.0.0.0/33\": write an address and a prefix length, e.g. \"192.168.1.0/24\""),
            ("[network]\nallow = [\"192.168.1/24\"]", "network.allow[0]", 2, "invalid network"),
            ("[network]\nallow = [\"fd00::/x\"]", "network.allow[0]", 2, "invalid network"),
            ("[network]\nallow = [\"10.0.0.0/8\",\n  \"nas.local/24\"]", "network.allow[1]", 3, "invalid network"),
            ("[network]\nallow = [\" \"]", "network.allow[0]", 2, "must not be empty"),
            ("[network]\nallow = [\"http://nas.local\"]", "network.allow[0]", 2, "without \"http://\", e.g. \"nas.local\""),
            ("[network]\nallow = [\"nas.local:8080\"]", "network.allow[0]", 2, "without a port"),
            ("[network]\nallow = [\"*.local\"]", "network.allow[0]", 2, "wildcards are not supported: list each host name"),
            ("[network]\nallow = [\"nas local\"]", "network.allow[0]", 2, "not a valid host name"),
            ("[network]\nallow = [\"a..b\"]", "network.allow[0]", 2, "not a valid host name"),
            ("[network]\nallow = [\"10.0.0.256\"]", "network.allow[0]", 2, "not a valid host name"),
            ("[[site]]\nhost = \"https://example.com/\"\nkeep = [\"p\"]", "site[0].host", 2, "write only the host name, without \"https://\", e.g. \"example.com\""),
            ("[[site]]\nhost = \"example.com/blog\"\nkeep = [\"p\"]", "site[0].host", 2, "without a path"),
            ("[[site]]\nhost = \"example.com:8443\"\nkeep = [\"p\"]", "site[0].host", 2, "without a port"),
            ("[[site]]\nhost = \".example.com\"\nkeep = [\"p\"]", "site[0].host", 2, "already covers its subdomains"),
            ("[[site]]\nhost = \"*.example.com\"\nkeep = [\"p\"]", "site[0].host", 2, "wildcards are not supported"),
            ("[[site]]\nhost = \"\"\nkeep = [\"p\"]", "site[0].host", 2, "must not be empty"),
            ("\n[[site]]\nkeep = [\"p\"]", "site[0].host", 2, "missing: every [[site]] needs host"),
            ("[[site]]\nhost = \"a.example\"\nkeep = [\"article\", \"div[\"]", "site[0].keep[1]", 3, "invalid CSS selector \"div[\""),
            ("[[site]]\nhost = \"a.example\"\ndrop = [\"p:frobnicate\"]", "site[0].drop[0]", 3, "invalid CSS selector \"p:frobnicate\""),
            ("[[site]]\nhost = \"a.example\"\ndrop = [\"\"]", "site[0].drop[0]", 3, "must not be empty"),
            ("\n[[site]]\nhost = \"a.example\"", "site[0]", 2, "needs keep or drop selectors"),
            ("[[site]]\nhost = \"a.example\"\nkeep = []\ndrop = []", "site[0]", 1, "needs keep or drop selectors"),
            ("[server]\nwebsub_hub = \"hub.example.com\"", "server.websub_hub", 2, "invalid URL \"hub.example.com\": relative URL without a base; write the hub's address in full, e.g. https://pubsubhubbub.appspot.com/"),
            ("[server]\nwebsub_hub = \"\"", "server.websub_hub", 2, "invalid URL"),
            ("[server]\nwebsub_hub = \"ftp://hub.example.com/\"", "server.websub_hub", 2, "only http and https"),
            ("[server]\nwebsub_hub = \"https://hub.example.com/#x\"", "server.websub_hub", 2, "cannot have a fragment"),
            ("\n[[output]]\ntitle = \"x\"", "output[0].name", 2, "missing: every [[output]] needs name = \"…\""),
            ("[[output]]\nname = \"\"", "output[0].name", 2, "must not be empty"),
            ("[[output]]\nname = \"Rust\"", "output[0].name", 2, "invalid output name \"Rust\": uppercase letters are not allowed, write \"rust\"; a name is 1 to 64 characters of a-z, 0-9, \"-\" and \"_\""),
            ("[[output]]\nname = \"rust news\"", "output[0].name", 2, "' ' is not allowed; a name is 1 to 64 characters of a-z, 0-9, \"-\" and \"_\""),
            ("[[output]]\nname = \"a/b\"", "output[0].name", 2, "'/' is not allowed"),
            ("[[output]]\nname = \"rust.atom\"", "output[0].name", 2, "'.' is not allowed"),
            ("[[output]]\nname = \"café\"", "output[0].name", 2, "'é' is not allowed"),
            ("[[output]]\nname = \"Rust News\"", "output[0].name", 2, "' ' is not allowed"),
            ("[[output]]\nname = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"", "output[0].name", 2, "it is 65 characters long, at most 64 are allowed"),
            ("[[output]]\nname = \"a\"\ntitle = \" \"", "output[0].title", 3, "must not be empty"),
            ("[[output]]\nname = \"a\"\ntags = [\" \"]", "output[0].tags[0]", 3, "must not be empty"),
            ("[[output]]\nname = \"a\"\nfeeds = [\"lwn.net/headlines/rss\"]", "output[0].feeds[0]", 3, "invalid URL \"lwn.net/headlines/rss\""),
            ("[[output]]\nname = \"a\"\nfeeds = [\"https://a.example/\",\n  \"file:///etc/passwd\"]", "output[0].feeds[1]", 4, "only http and https"),
            ("[[output]]\nname = \"a\"\nfeeds = [\"\"]", "output[0].feeds[0]", 3, "must not be empty"),
            ("[[output]]\nname = \"a\"\ninclude = \"(rust\"", "output[0].include", 3, "invalid regex \"(rust\": unclosed group"),
            ("[[output]]\nname = \"a\"\nexclude = \"[a-\"", "output[0].exclude", 3, "invalid regex \"[a-\": unclosed character class"),
            ("[[output]]\nname = \"a\"\ninclude = \"\"", "output[0].include", 3, "must not be empty"),
            ("[[output]]\nname = \"a\"\nexclude = ''", "output[0].exclude", 3, "leave the key out instead"),
            ("[[output]]\nname = \"a\"\nlimit = 0", "output[0].limit", 3, "must be between 1 and server.max_page_size (500), got 0"),
            ("[[output]]\nname = \"a\"\nlimit = 501", "output[0].limit", 3, "must be between 1 and server.max_page_size (500), got 501"),
            ("[[output]]\nname = \"a\"\nlimit = -1", "output[0].limit", 3, "got -1"),
            ("[server]\nmax_page_size = 20\n\n[[output]]\nname = \"a\"\nlimit = 21", "output[0].limit", 6, "server.max_page_size (20), got 21"),
            ("[[output]]\nname = \"a\"\nlimit = 99999999999999999999", "output[0].limit", 3, "too large"),
        ];
        for &(toml, key, line, needle) in cases {
            let msg = check_err(toml, key, line);
            assert!(msg.contains(needle), "{toml:?}: {msg:?} lacks {needle:?}");
        }
    }

#[test]
fn output_names_parse() {
    let long = "a".repeat(MAX_OUTPUT_NAME_LEN);
    let cases = [
        ("rust", "rust"),
        (" rust ", "rust"),
        ("a", "a"),
        ("0", "0"),
        ("rust-news_2", "rust-news_2"),
        ("-", "-"),
        ("_all", "_all"),
        (long.as_str(), long.as_str()),
    ];
    for (s, want) in cases {
        assert_eq!(parse_output_name(s).as_deref(), Ok(want), "{s:?}");
    }
    let cases = [
        ("", "must not be empty"),
        ("  ", "must not be empty"),
        ("Rust", "uppercase letters are not allowed, write \"rust\""),
        (
            "RUST-News",
            "uppercase letters are not allowed, write \"rust-news\"",
        ),
        ("Rust News", "' ' is not allowed"),
        ("rust.atom", "'.' is not allowed"),
        ("a/b", "'/' is not allowed"),
        ("a%20b", "'%' is not allowed"),
        ("über", "'ü' is not allowed"),
        ("a\tb", "'\\t' is not allowed"),
    ];
    for (s, needle) in cases {
        let err = parse_output_name(s).unwrap_err();
        assert!(err.contains(needle), "{s:?}: {err:?} lacks {needle:?}");
        if !s.trim().is_empty() {
            assert!(err.ends_with(OUTPUT_NAME_HINT), "{err}");
        }
    }
    let too_long = "a".repeat(MAX_OUTPUT_NAME_LEN + 1);
    let err = parse_output_name(&too_long).unwrap_err();
    assert!(
        err.contains("it is 65 characters long, at most 64 are allowed"),
        "{err}"
    );
}

#[test]
fn regexes_are_compiled() {
    for good in [
        "rust",
        r"(?i)\b(rust|cargo)\b",
        "^\\[Sponsored\\]",
        " ",
        "a|b|c",
        r"\p{Greek}+",
        "(?x) rust  # a comment",
    ] {
        assert_eq!(parse_regex(good).as_deref(), Ok(good), "{good:?}");
    }
    let cases = [
        ("(rust", "unclosed group"),
        ("rust)", "unopened group"),
        ("[a-", "unclosed character class"),
        ("*rust", "repetition operator missing expression"),
        ("a{2,1}", "invalid repetition count range"),
        (r"\p{Nope}", "Unicode property not found"),
        (r"(a)\1", "backreferences are not supported"),
        ("(?P<n>a)(?P<n>b)", "duplicate capture group name"),
        ("a\n(b", "unclosed group"),
    ];
    for (bad, needle) in cases {
        let err = parse_regex(bad).unwrap_err();
        assert!(
            err.starts_with(&format!("invalid regex \"{bad}\": ")),
            "{err}"
        );
        assert!(err.contains(needle), "{bad:?}: {err:?} lacks {needle:?}");
        // One line after the quoted pattern, without the regex crate's
        // "regex parse error:" banner or its ^ marker.
        let after = &err[format!("invalid regex \"{bad}\": ").len()..];
        assert!(!after.contains('\n'), "{err:?}");
        assert!(!after.contains("regex parse error"), "{err:?}");
        assert!(!after.contains('^'), "{err:?}");
    }
    // A pattern that compiles too big says so in one line.
    let err = parse_regex(r"\w{1000}{1000}").unwrap_err();
    assert!(err.contains("size limit"), "{err}");
    assert!(!err.contains('\n'), "{err:?}");
}

#[test]
fn regex_errors_read_as_one_line() {
    let cases = [
        (
            "regex parse error:\n    (rust\n    ^\nerror: unclosed group",
            "unclosed group",
        ),
        (
            "Compiled regex exceeds size limit of 10485760 bytes.",
            "Compiled regex exceeds size limit of 10485760 bytes.",
        ),
        ("\n  something odd  \n", "something odd"),
        ("", "it does not compile"),
    ];
    for (message, want) in cases {
        assert_eq!(describe_regex_error(message), want, "{message:?}");
    }
}

#[test]
fn duplicate_output_names_are_reported_at_the_second() {
    let msg = check_err(
        r#"
[[output]]
name = "rust"
tags = ["rust"]

[[output]]
name = "news"

[[output]]
title = "More Rust"
name = " rust "
"#,
        "output[2].name",
        11,
    );
    assert!(
        msg.contains("duplicate output name \"rust\": already used by output[0] on line 3"),
        "{msg}"
    );
    // Names differ from feed titles and tags: no clash across tables.
    let config = ok(
        "[[feed]]\nurl = \"https://a.example/\"\ntitle = \"rust\"\ntags = [\"rust\"]\n\n[[output]]\nname = \"rust\"\ntags = [\"rust\"]\n",
    );
    assert_eq!(config.outputs.len(), 1);
}

#[test]
fn output_limits_follow_max_page_size() {
    let limit = |toml: &str| ok(toml).outputs[0].limit;
    let cases = [
        ("[[output]]\nname = \"a\"\n", None),
        ("[[output]]\nname = \"a\"\nlimit = 1\n", Some(1)),
        ("[[output]]\nname = \"a\"\nlimit = 500\n", Some(500)),
        (
            "[server]\nmax_page_size = 1000\n\n[[output]]\nname = \"a\"\nlimit = 1000\n",
            Some(1000),
        ),
        (
            "[server]\nmax_page_size = 10\n\n[[output]]\nname = \"a\"\nlimit = 10\n",
            Some(10),
        ),
    ];
    for (toml, want) in cases {
        assert_eq!(limit(toml), want, "{toml}");
    }
    // An invalid max_page_size is not used to judge limits: only it is
    // reported.
    check_err(
        "[server]\nmax_page_size = 0\n\n[[output]]\nname = \"a\"\nlimit = 600\n",
        "server.max_page_size",
        2,
    );
    check_err(
        "[server]\nmax_page_size = \"big\"\n\n[[output]]\nname = \"a\"\nlimit = 600\n",
        "server.max_page_size",
        2,
    );
    // Without a known ceiling a limit must still be at least 1.
    let found =
        problems("[server]\nmax_page_size = \"big\"\n\n[[output]]\nname = \"a\"\nlimit = 0\n");
    let got: Vec<(&str, Option<usize>, &str)> = found
        .iter()
        .map(|p| (p.key.as_str(), p.line, p.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "server.max_page_size",
                Some(2),
                "expected an integer, found a string"
            ),
            (
                "output[0].limit",
                Some(6),
                "must be between 1 and server.max_page_size, got 0"
            ),
        ]
    );
}

#[test]
fn output_title_defaults_to_server_title_and_name() {
    let config = ok(
        "[server]\ntitle = \"My River\"\n\n[[output]]\nname = \"rust\"\n\n[[output]]\nname = \"linux\"\ntitle = \"Penguins\"\n",
    );
    let titles: Vec<String> = config
        .outputs
        .iter()
        .map(|o| config.server.output_title(o))
        .collect();
    assert_eq!(titles, ["My River: rust", "Penguins"]);
    let config = ok("[[output]]\nname = \"all\"\n");
    assert_eq!(
        config.server.output_title(&config.outputs[0]),
        "Tributary: all"
    );
}

#[test]
fn every_output_problem_is_reported_in_line_order() {
    // One [[output]] with a problem on every key, then a duplicate name:
    // all are reported, each with its key and line.
    let toml = r#"
[[output]]
name = "Bad Name"
title = ""
tags = "rust"
feeds = ["https://ok.example/", "not a url"]
include = "(oops"
exclude = "[z-a]"
limit = 0
colour = "blue"

[[output]]
name = "ok"

[[output]]
include = "fine"
limit = 9999

[[output]]
name = "ok"
"#;
    let got: Vec<(String, Option<usize>)> = problems(toml)
        .into_iter()
        .map(|p| (p.key, p.line))
        .collect();
    let want = [
        ("output[0].name", 3),
        ("output[0].title", 4),
        ("output[0].tags", 5),
        ("output[0].feeds[1]", 6),
        ("output[0].include", 7),
        ("output[0].exclude", 8),
        ("output[0].limit", 9),
        ("output[0].colour", 10),
        ("output[2].name", 15),
        ("output[2].limit", 17),
        ("output[3].name", 20),
    ];
    let want: Vec<(String, Option<usize>)> =
        want.iter().map(|&(k, l)| (k.to_owned(), Some(l))).collect();
    assert_eq!(got, want);
}

#[test]
fn interval_must_not_undercut_min_interval() {
    let msg = check_err(
        "[poll]\nmin_interval = \"10m\"\ninterval = \"5m\"\n",
        "poll.interval",
        3,
    );
    assert!(msg.contains("shorter than min_interval (10m)"), "{msg}");

    // With interval left at its default, the key to fix is the floor.
    check_err("[poll]\nmin_interval = \"2h\"\n", "poll.min_interval", 2);

    let msg = check_err(
        "[poll]\nmin_interval = \"1m\"\n\n[[feed]]\nurl = \"https://a.example/\"\ninterval = \"30s\"\n",
        "feed[0].interval",
        6,
    );
    assert!(msg.contains("shorter than poll.min_interval (1m)"), "{msg}");

    // The default floor (5m) applies when min_interval is not set.
    check_err(
        "[[feed]]\nurl = \"https://a.example/\"\ninterval = \"1m\"\n",
        "feed[0].interval",
        3,
    );
}

#[test]
fn interval_ceilings() {
    // max_interval is compared with interval, both values named.
    let msg = check_err(
        "[poll]\ninterval = \"2h\"\nmax_interval = \"90m\"\n",
        "poll.max_interval",
        3,
    );
    assert!(
        msg.contains("max_interval (1h30m) is shorter than interval (2h)"),
        "{msg}"
    );
    // Equal is fine, and a long interval needs a long enough ceiling.
    let config = ok("[poll]\ninterval = \"2d\"\nmax_interval = \"2d\"\n");
    assert_eq!(config.poll.max_interval, Duration::from_secs(2 * 86_400));
    // With max_interval left at its default, the key to fix is interval.
    let msg = check_err("[poll]\ninterval = \"2d\"\n", "poll.interval", 2);
    assert!(
        msg.contains("longer than the default max_interval (1d)"),
        "{msg}"
    );

    // max_backoff is compared with min_interval.
    let msg = check_err(
        "[poll]\nmin_interval = \"10m\"\nmax_backoff = \"5m\"\n",
        "poll.max_backoff",
        3,
    );
    assert!(
        msg.contains("max_backoff (5m) is shorter than min_interval (10m)"),
        "{msg}"
    );
    let config = ok("[poll]\nmin_interval = \"10m\"\nmax_backoff = \"10m\"\n");
    assert_eq!(config.poll.max_backoff, Duration::from_secs(600));
    let msg = check_err(
        "[poll]\nmin_interval = \"2d\"\ninterval = \"3d\"\nmax_interval = \"3d\"\n",
        "poll.min_interval",
        2,
    );
    assert!(
        msg.contains("longer than the default max_backoff (1d)"),
        "{msg}"
    );
    // A min_interval already blamed for the default interval is not
    // blamed again for the default max_backoff.
    let msg = check_err("[poll]\nmin_interval = \"2d\"\n", "poll.min_interval", 2);
    assert!(msg.contains("default interval"), "{msg}");

    // A feed's own interval stays within both bounds.
    let msg = check_err(
        "[poll]\nmax_interval = \"6h\"\n\n[[feed]]\nurl = \"https://a.example/\"\ninterval = \"7h\"\n",
        "feed[0].interval",
        6,
    );
    assert!(msg.contains("longer than poll.max_interval (6h)"), "{msg}");
    // An invalid max_interval is not used to judge feeds.
    check_err(
        "[poll]\nmax_interval = \"soon\"\n\n[[feed]]\nurl = \"https://a.example/\"\ninterval = \"7d\"\n",
        "poll.max_interval",
        2,
    );
}

#[test]
fn per_host_spacing_accepts_zero() {
    let spacing = |s: &str| {
        ok(&format!("[poll]\nper_host_spacing = \"{s}\"\n"))
            .poll
            .per_host_spacing
    };
    assert_eq!(spacing("0s"), Duration::ZERO);
    assert_eq!(spacing("0ms"), Duration::ZERO);
    assert_eq!(spacing("2s500ms"), Duration::from_millis(2500));
    // Unlike a timeout, where zero is an error.
    check_err("[poll]\ntimeout = \"0s\"\n", "poll.timeout", 2);
}

#[test]
fn booleans_and_counts_at_their_bounds() {
    let config = ok(
        "[poll]\nadaptive = false\nper_host_concurrency = 1024\n\n[extract]\nfull_text = false\nmax_attempts = 20\nconcurrency = 1\n",
    );
    assert!(!config.poll.adaptive);
    assert_eq!(config.poll.per_host_concurrency, 1024);
    assert!(!config.extract.full_text);
    assert_eq!(config.extract.max_attempts, 20);
    assert_eq!(config.extract.concurrency, 1);
    assert_eq!(ok("[extract]\nmax_attempts = 1\n").extract.max_attempts, 1);
}

#[test]
fn feed_full_text_overrides_extract_full_text() {
    let toml = |global: &str, feed: &str| {
        format!(
            "[extract]\nfull_text = {global}\n\n[[feed]]\nurl = \"https://a.example/\"\n{feed}\n"
        )
    };
    let cases = [
        ("true", "", None, true),
        ("false", "", None, false),
        ("true", "full_text = false", Some(false), false),
        ("false", "full_text = true", Some(true), true),
    ];
    for (global, feed, want_spec, want) in cases {
        let config = ok(&toml(global, feed));
        let spec = &config.feeds[0];
        assert_eq!(spec.full_text, want_spec, "{global} {feed}");
        assert_eq!(config.extract.full_text_for(spec), want, "{global} {feed}");
    }
}

#[test]
fn allow_rules() {
    let config = ok(r#"
[network]
allow = ["192.168.1.0/24", "fd00::/8", "10.0.0.5", "::1", "NAS.local", "[fe80::1]"]
"#);
    let network = &config.network;
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let ips = [
        ("192.168.1.1", true),
        ("192.168.1.255", true),
        ("192.168.2.1", false),
        ("10.0.0.5", true),
        ("10.0.0.6", false),
        ("::1", true),
        ("::2", false),
        ("fd12:3456::1", true),
        ("fe80::1", true),
        ("fe80::2", false),
        ("127.0.0.1", false),
        // The IPv4-mapped spelling of an allowed IPv4 address.
        ("::ffff:192.168.1.9", true),
        ("::ffff:10.0.0.6", false),
    ];
    for (s, want) in ips {
        assert_eq!(network.allows_ip(ip(s)), want, "allows_ip({s})");
    }
    let hosts = [
        ("nas.local", true),
        ("NAS.LOCAL", true),
        ("nas.local.", true),
        ("www.nas.local", false),
        ("nas.local.evil.example", false),
        ("nas", false),
        ("example.com", false),
        // IP literals, as a URL spells them, go through allows_ip.
        ("10.0.0.5", true),
        ("10.0.0.6", false),
        ("[::1]", true),
        ("[::2]", false),
    ];
    for (host, want) in hosts {
        assert_eq!(network.allows_host(host), want, "allows_host({host})");
    }

    // Nothing is allowed by default.
    let empty = ok("").network;
    assert!(!empty.allows_ip(ip("127.0.0.1")));
    assert!(!empty.allows_host("localhost"));
    // A name is a name, even one that resolves to loopback.
    let localhost = ok("[network]\nallow = [\"localhost\"]\n").network;
    assert!(localhost.allows_host("LocalHost"));
    assert!(!localhost.allows_ip(ip("127.0.0.1")));
}

#[test]
fn allow_items_parse() {
    let net = |s: &str| AllowRule::Net(s.parse().unwrap());
    let cases = [
        ("192.168.1.0/24", net("192.168.1.0/24")),
        ("192.168.1.77/24", net("192.168.1.0/24")),
        (" 10.0.0.5 ", net("10.0.0.5/32")),
        ("::1", net("::1/128")),
        ("[::1]", net("::1/128")),
        ("FD00::/8", net("fd00::/8")),
        ("0.0.0.0/0", net("0.0.0.0/0")),
        ("Nas.Local", AllowRule::Host("nas.local".into())),
        ("printer", AllowRule::Host("printer".into())),
        (
            "bücher.local",
            AllowRule::Host("xn--bcher-kva.local".into()),
        ),
    ];
    for (s, want) in cases {
        assert_eq!(parse_allow_rule(s), Ok(want), "{s:?}");
    }
}

#[test]
fn site_hosts_parse() {
    let cases = [
        ("example.com", "example.com"),
        (" Example.COM. ", "example.com"),
        ("blog.example.co.uk", "blog.example.co.uk"),
        ("my_site.example", "my_site.example"),
        ("bücher.example", "xn--bcher-kva.example"),
    ];
    for (s, want) in cases {
        assert_eq!(parse_site_host(s).as_deref(), Ok(want), "{s:?}");
    }
    for bad in [
        "http://example.com",
        "example.com/",
        "example.com:80",
        "exa mple.com",
        "-",
        ".",
        "example..com",
    ] {
        assert!(parse_site_host(bad).is_err(), "{bad:?} should be rejected");
    }
}

#[test]
fn selectors_are_compiled() {
    for good in [
        "article",
        ".post-body",
        "div#content > p",
        "main article, .entry-content",
        "p:first-child",
        "a[href^=\"https://twitter.com\"]",
        "ul li:nth-child(2n+1)",
        "div:has(> img)",
    ] {
        assert_eq!(parse_selector(good).as_deref(), Ok(good), "{good:?}");
    }
    for bad in ["div[", "p:frobnicate", "> p", "#", "a,,b", "!", "div..x"] {
        let err = parse_selector(bad).unwrap_err();
        assert!(
            err.starts_with(&format!("invalid CSS selector \"{bad}\": ")),
            "{err}"
        );
        assert!(err.ends_with(SELECTOR_HINT), "{err}");
    }
}

#[test]
fn selector_errors_read_as_words() {
    let cases = [
        (
            "Custom(UnsupportedPseudoClassOrElement)",
            "unsupported pseudo class or element",
        ),
        (
            "Basic(UnexpectedToken(Delim('!')))",
            "unexpected token Delim('!')",
        ),
        ("Basic(EndOfInput)", "it ends too early"),
        ("Something", "something"),
    ];
    for (debug, want) in cases {
        assert_eq!(describe_selector_error(debug), want);
    }
}

#[test]
fn duplicate_site_hosts_are_reported_at_the_second() {
    let msg = check_err(
        r#"
[[site]]
host = "example.com"
keep = ["article"]

[[site]]
host = "lwn.net"
drop = [".ads"]

[[site]]
host = "Example.COM."
drop = [".comments"]
"#,
        "site[2].host",
        11,
    );
    assert!(msg.contains("already listed as site[0] on line 3"), "{msg}");

    // A subdomain is a different site: its rule is more specific.
    let config = ok(
        "[[site]]\nhost = \"example.com\"\nkeep = [\"article\"]\n\n[[site]]\nhost = \"blog.example.com\"\nkeep = [\"main\"]\n",
    );
    assert_eq!(config.sites.len(), 2);
}

#[test]
fn a_bad_selector_is_not_also_an_empty_site() {
    // Only the selector is reported, not "needs keep or drop" too.
    check_err(
        "[[site]]\nhost = \"a.example\"\nkeep = [\"div[\"]\n",
        "site[0].keep[0]",
        3,
    );
    // Every bad selector is reported, each on its line.
    let got: Vec<(String, Option<usize>)> = problems(
            "[[site]]\nhost = \"a.example\"\nkeep = [\n  \"div[\",\n  \"article\",\n  \"p:nope\",\n]\ndrop = [\"!\"]\n",
        )
        .into_iter()
        .map(|p| (p.key, p.line))
        .collect();
    let want = [
        ("site[0].keep[0]", 4),
        ("site[0].keep[2]", 6),
        ("site[0].drop[0]", 8),
    ];
    let want: Vec<(String, Option<usize>)> =
        want.iter().map(|&(k, l)| (k.to_owned(), Some(l))).collect();
    assert_eq!(got, want);
}

#[test]
fn an_invalid_value_is_not_reported_again_by_later_checks() {
    // min_interval is bad; interval must not also be flagged against it.
    check_err(
        "[poll]\nmin_interval = \"soon\"\ninterval = \"1s\"\n",
        "poll.min_interval",
        2,
    );
    // max_page_size is bad; page_size is only checked for >= 1.
    check_err(
        "[server]\nmax_page_size = \"big\"\npage_size = 1000\n",
        "server.max_page_size",
        2,
    );
}

#[test]
fn duplicate_feed_urls_are_reported_at_the_second() {
    let msg = check_err(
        r#"
[[feed]]
url = "https://hnrss.org/frontpage"

[[feed]]
url = "https://lwn.net/headlines/rss"

[[feed]]
url = "https://HNRSS.org/frontpage"
"#,
        "feed[2].url",
        9,
    );
    assert!(msg.contains("already listed as feed[0] on line 3"), "{msg}");
}

#[test]
fn every_problem_is_reported_in_line_order() {
    let toml = r#"
[server]
listen = "nowhere"
title = ""

[poll]
interval = "5x"
colour = "blue"

[[feed]]
url = "https://a.example/"

[[feed]]
url = "https://a.example/"
interval = 60
"#;
    let got: Vec<(String, Option<usize>)> = problems(toml)
        .into_iter()
        .map(|p| (p.key, p.line))
        .collect();
    let want = [
        ("server.listen", 3),
        ("server.title", 4),
        ("poll.interval", 7),
        ("poll.colour", 8),
        ("feed[1].url", 14),
        ("feed[1].interval", 15),
    ];
    let want: Vec<(String, Option<usize>)> =
        want.iter().map(|&(k, l)| (k.to_owned(), Some(l))).collect();
    assert_eq!(got, want);
}

#[test]
fn display_puts_one_problem_per_line() {
    let err = from_toml_with_env(
        "[poll]\ninterval = \"5x\"\ntimeout = \"0s\"\n",
        Some(Path::new("config/tributary.toml")),
        None,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "config/tributary.toml:2: poll.interval: invalid duration \"5x\": write it as 30s, 15m, 1h or 1h30m\n\
             config/tributary.toml:3: poll.timeout: must be longer than 0s"
    );

    let err = from_toml_with_env("[poll]\ninterval = \"5x\"\n", None, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 2: poll.interval: invalid duration \"5x\": write it as 30s, 15m, 1h or 1h30m"
    );
}

#[test]
fn syntax_error_reports_its_line() {
    let found = problems("[server]\nlisten = \"127.0.0.1:1\"\ntitle = \n");
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].key, "");
    assert_eq!(found[0].line, Some(3));
    assert!(found[0].message.starts_with("invalid TOML: "), "{found:#?}");

    // A key defined twice is a TOML error too.
    let found = problems("[poll]\ninterval = \"1h\"\n\ninterval = \"2h\"\n");
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].line, Some(4), "{found:#?}");
}

#[test]
fn read_error_names_the_file() {
    let err = Config::load(Path::new("/nonexistent/tributary.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("cannot read config file /nonexistent/tributary.toml: "),
        "{err}"
    );
}

/// `database` may name a PostgreSQL server; `TRIBUTARY_DATABASE` overrides
/// the file either way; a bad URL is a problem on its line (or named by the
/// variable) whose message never repeats the password.
#[test]
fn database_may_be_a_postgres_url_and_the_environment_overrides_it() {
    use crate::database::Database;
    let etc = Some(Path::new("/etc/tributary/tributary.toml"));
    let load = |toml: &str, env: Option<&str>| from_toml_with_vars(toml, etc, None, env);
    let config = load(
        "database = \"postgres://feeds:hunter2@db.lan/tributary\"",
        None,
    )
    .unwrap();
    assert_eq!(config.database.backend(), "PostgreSQL");
    assert_eq!(
        config.database.to_string(),
        "postgres://feeds:***@db.lan/tributary"
    );
    assert!(!format!("{config:?}").contains("hunter2"));
    // The variable wins over the file, both ways.
    let config = load(
        "database = \"x.db\"",
        Some("postgresql://feeds@db.lan/other"),
    )
    .unwrap();
    assert_eq!(
        config.database.to_string(),
        "postgresql://feeds@db.lan/other"
    );
    let config = load(
        "database = \"postgres://feeds@db.lan/t\"",
        Some("/srv/tributary.db"),
    )
    .unwrap();
    assert_eq!(
        config.database,
        Database::Sqlite(std::path::PathBuf::from("/srv/tributary.db"))
    );
    // An empty variable is unset.
    let config = load("database = \"x.db\"", Some("")).unwrap();
    assert_eq!(
        config.database,
        Database::Sqlite(std::path::PathBuf::from("/etc/tributary/x.db"))
    );
    // Bad URLs: a problem with the key and line, or the variable.
    let err = load(
        "# the database\ndatabase = \"postgres://u:hunter2@db.lan:notaport/t\"",
        None,
    );
    let err = err.map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("tributary.toml:2: database: "), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let err = load("", Some("postgres://u:hunter2@/t"))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("TRIBUTARY_DATABASE"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn database_location() {
    let etc = Some(Path::new("/etc/tributary/tributary.toml"));
    let db = |toml: &str, path: Option<&Path>, state: Option<&str>| match from_toml_with_env(
        toml, path, state,
    ) {
        Ok(config) => config
            .database
            .sqlite_path()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
        Err(e) => panic!("{e}"),
    };
    // systemd's StateDirectory wins over the config directory for the
    // default; only the first of several directories is used.
    assert_eq!(
        db("", etc, Some("/var/lib/tributary")),
        Path::new("/var/lib/tributary/tributary.db")
    );
    assert_eq!(
        db("", etc, Some("/var/lib/tributary:/var/lib/other")),
        Path::new("/var/lib/tributary/tributary.db")
    );
    assert_eq!(
        db("", etc, Some("")),
        Path::new("/etc/tributary/tributary.db")
    );
    assert_eq!(db("", etc, None), Path::new("/etc/tributary/tributary.db"));
    // An explicit path wins; relative resolves against the config file.
    let state = Some("/var/lib/tributary");
    assert_eq!(
        db("database = \"x.db\"", etc, state),
        Path::new("/etc/tributary/x.db")
    );
    assert_eq!(
        db("database = \"/srv/x.db\"", etc, state),
        Path::new("/srv/x.db")
    );
    // Without a file, relative means the current directory.
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(db("", None, None), cwd.join("tributary.db"));
    assert_eq!(db("database = \"x.db\"", None, None), cwd.join("x.db"));
    assert_eq!(
        db("", Some(Path::new("tributary.toml")), None),
        cwd.join("tributary.db")
    );
    assert_eq!(
        db("", Some(Path::new("config/tributary.toml")), None),
        cwd.join("config/tributary.db")
    );
}

#[test]
fn durations() {
    let secs = Duration::from_secs;
    let cases = [
        ("30s", secs(30)),
        ("15m", secs(900)),
        ("1h", secs(3600)),
        ("1d", secs(86_400)),
        ("1h30m", secs(5400)),
        (" 1h 30m ", secs(5400)),
        ("500ms", Duration::from_millis(500)),
        ("1m30s250ms", Duration::from_millis(90_250)),
        ("0s", Duration::ZERO),
        ("90m", secs(5400)),
    ];
    for (s, want) in cases {
        assert_eq!(parse_duration(s), Ok(want), "{s:?}");
    }
    for bad in [
        "",
        "  ",
        "5",
        "5x",
        "-5m",
        "1.5h",
        "h",
        "1h30",
        "1 hour",
        "5S",
        "99999999999999999999d",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
    }
    assert_eq!(
        parse_duration("5x"),
        Err("invalid duration \"5x\": write it as 30s, 15m, 1h or 1h30m".to_owned())
    );
}

#[test]
fn format_duration_is_the_inverse_of_parse() {
    let cases = [
        (Duration::ZERO, "0s"),
        (Duration::from_secs(5400), "1h30m"),
        (Duration::from_secs(90), "1m30s"),
        (Duration::from_secs(86_400 + 60), "1d1m"),
        (Duration::from_millis(500), "500ms"),
        (Duration::from_nanos(1_001_001_001), "1s1ms1us1ns"),
    ];
    for (d, s) in cases {
        assert_eq!(format_duration(d), s);
        assert_eq!(parse_duration(s), Ok(d), "{s:?}");
    }
    for s in ["30s", "15m", "1h", "1d", "1h30m", "500ms", "2d3h4m5s6ms"] {
        let d = parse_duration(s).unwrap();
        assert_eq!(format_duration(d), s);
    }
}

#[test]
fn sizes() {
    let cases = [
        ("10MB", 10_000_000),
        ("512KB", 512_000),
        ("1GB", 1_000_000_000),
        ("1MiB", 1_048_576),
        ("1KiB", 1024),
        ("2GiB", 2 << 30),
        ("1048576", 1_048_576),
        ("100B", 100),
        ("10 mb", 10_000_000),
        ("0", 0),
    ];
    for (s, want) in cases {
        assert_eq!(parse_size(s), Ok(want), "{s:?}");
    }
    for bad in [
        "",
        "MB",
        "10XB",
        "1.5MB",
        "-1MB",
        "10M",
        "99999999999999999999",
        "20000000TB",
    ] {
        assert!(parse_size(bad).is_err(), "{bad:?} should be rejected");
    }
}

#[test]
fn closest_key_suggestions() {
    assert_eq!(closest("intervall", POLL_KEYS), Some("interval"));
    assert_eq!(closest("Title", SERVER_KEYS), Some("title"));
    assert_eq!(closest("min-interval", POLL_KEYS), Some("min_interval"));
    assert_eq!(closest("colour", POLL_KEYS), None);
    assert_eq!(closest("ur", FEED_KEYS), Some("url"));
    assert_eq!(closest("link", FEED_KEYS), None);
}

#[test]
fn example_config_loads() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/tributary.toml"
    ));
    let text = std::fs::read_to_string(path).unwrap();
    let config = match from_toml_with_env(&text, Some(path), None) {
        Ok(config) => config,
        Err(e) => panic!("the example config does not load:\n{e}"),
    };
    // Whatever the example shows uncommented must equal the defaults the
    // code uses, so the documentation cannot drift from behaviour.
    let defaults = defaults(Some(path), None);
    assert_eq!(config.server, defaults.server);
    assert_eq!(config.poll, defaults.poll);
    assert_eq!(config.log, defaults.log);
    assert_eq!(config.network, defaults.network);
    assert_eq!(config.extract, defaults.extract);
    assert_eq!(config.retention, defaults.retention);
    // The example [[site]] and [[output]] are commented out: site rules
    // and named outputs are opt-in.
    assert_eq!(config.sites, defaults.sites);
    assert_eq!(config.outputs, defaults.outputs);
    assert_eq!(
        config.database.sqlite_path(),
        Some(path.with_file_name("tributary.db").as_path())
    );
    assert!(config.feeds.len() >= 2, "{:#?}", config.feeds);
    assert!(
        config
            .feeds
            .iter()
            .any(|f| f.url == "https://blog.rust-lang.org/feed.xml")
    );
    assert!(config.feeds.iter().any(|f| !f.tags.is_empty()));

    // And the public entry point agrees.
    assert!(Config::load(path).is_ok());

    // The commented-out examples are valid once uncommented, next to
    // the uncommented rest of the file.
    let uncommented = |header: &str| {
        let block = commented_example(&text, header);
        let full = format!("{text}\n{block}");
        match from_toml_with_env(&full, Some(path), None) {
            Ok(config) => config,
            Err(e) => panic!("the example {header} does not load:\n{e}"),
        }
    };
    let config = uncommented("[[site]]");
    assert_eq!(config.sites.len(), 1, "{:#?}", config.sites);

    // The [[output]] example shows every key: none is left at its
    // default. Its feeds are among the example's feeds.
    let config = uncommented("[[output]]");
    let [output] = config.outputs.as_slice() else {
        panic!("{:#?}", config.outputs);
    };
    assert!(
        output.title.is_some()
            && !output.tags.is_empty()
            && !output.feeds.is_empty()
            && output.include.is_some()
            && output.exclude.is_some()
            && output.limit.is_some(),
        "{output:#?}"
    );
    for url in &output.feeds {
        assert!(config.feeds.iter().any(|f| &f.url == url), "{url}");
    }
    for tag in &output.tags {
        assert!(config.feeds.iter().any(|f| f.tags.contains(tag)), "{tag}");
    }

    // The commented-out websub_hub is valid once uncommented too.
    let hub = text
        .lines()
        .find_map(|l| l.strip_prefix("# websub_hub = "))
        .expect("the example shows websub_hub");
    let config = ok(&format!("[server]\nwebsub_hub = {hub}\n"));
    assert_eq!(
        config.server.websub_hub.as_ref().map(Url::as_str),
        Some("https://pubsubhubbub.appspot.com/")
    );
}

/// The commented-out example table `header` (`[[site]]`) of the example
/// config, uncommented: its `# [[site]]` line and the `# key = value`
/// lines right after it.
fn commented_example(text: &str, header: &str) -> String {
    let mut lines = text.lines().skip_while(|l| *l != format!("# {header}"));
    let mut block = String::new();
    if let Some(line) = lines.next() {
        block.push_str(&line[2..]);
        block.push('\n');
    }
    for line in lines.take_while(|l| l.starts_with("# ") && l.contains(" = ")) {
        block.push_str(&line[2..]);
        block.push('\n');
    }
    assert!(block.contains(" = "), "no example {header} found");
    block
}

#[test]
fn every_key_is_documented() {
    let example = include_str!("../../config/tributary.toml");
    let readme = include_str!("../../README.md");
    for (header, keys) in SECTIONS {
        for key in *keys {
            let row = match *header {
                // The other top-level keys are tables, documented by
                // their own keys.
                "the top level" if *key != "database" => continue,
                "the top level" => format!("| `{key}` |"),
                _ => format!("| `{header} {key}` |"),
            };
            assert!(readme.contains(&row), "README.md lacks a row {row}");
            let line = format!("{key} = ");
            assert!(
                example
                    .lines()
                    .any(|l| l.trim_start_matches(['#', ' ']).starts_with(&line)),
                "config/tributary.toml does not show {header} {key}"
            );
        }
    }
    // The commented-out tables show each of their own keys, not just a
    // key of the same name elsewhere (`title`, `tags`).
    for (header, keys) in [("[[site]]", SITE_KEYS), ("[[output]]", OUTPUT_KEYS)] {
        let block = commented_example(example, header);
        for key in keys {
            assert!(
                block.lines().any(|l| l.starts_with(&format!("{key} = "))),
                "the example {header} in config/tributary.toml does not show {key}"
            );
        }
    }
}

#[test]
fn retention_keys_are_read_and_zero_turns_a_limit_off() {
    let days = |n: u64| Some(Duration::from_secs(n * 86_400));
    let policy =
        |max_age, max_entries_per_feed, max_database_size, tombstone_max_age, max_tombstones| {
            RetentionPolicy {
                max_age,
                max_entries_per_feed,
                min_entries_per_feed: Some(10),
                max_database_size,
                tombstone_max_age,
                max_tombstones,
            }
        };
    let defaults = policy(
        days(180),
        Some(1000),
        Some(1_000_000_000),
        days(365),
        Some(500_000),
    );
    let cases = [
        ("", defaults),
        (
            "max_age = \"30d\"\nmax_entries_per_feed = 50\nmax_database_size = \"2GiB\"\n\
                 tombstone_max_age = \"90d\"\nmax_tombstones = 10",
            policy(days(30), Some(50), Some(2 << 30), days(90), Some(10)),
        ),
        (
            "max_age = \"0s\"\nmax_entries_per_feed = 0\nmax_database_size = 0",
            policy(None, None, None, days(365), Some(500_000)),
        ),
        (
            "tombstone_max_age = \"0s\"",
            RetentionPolicy {
                tombstone_max_age: None,
                ..defaults
            },
        ),
        (
            "max_tombstones = 0",
            RetentionPolicy {
                max_tombstones: None,
                ..defaults
            },
        ),
        (
            "min_entries_per_feed = 3",
            RetentionPolicy {
                min_entries_per_feed: Some(3),
                ..defaults
            },
        ),
        (
            "min_entries_per_feed = 0",
            RetentionPolicy {
                min_entries_per_feed: None,
                ..defaults
            },
        ),
    ];
    for (body, expected) in cases {
        let r = ok(&format!("[retention]\n{body}\n")).retention;
        assert_eq!(r.policy(), expected, "{body}");
    }
    let r = ok("[retention]\nmax_content_size = \"64KB\"\n").retention;
    assert_eq!(r.max_content_size, 64_000);
    assert_eq!(
        ok("").retention.max_content_size,
        crate::values::DEFAULT_MAX_CONTENT
    );
    let r = ok("[retention]\nhousekeeping_interval = \"6h\"\n").retention;
    assert_eq!(r.housekeeping_interval, Duration::from_secs(6 * 3600));
}

#[test]
fn retention_problems_name_key_and_line() {
    let cases = [
        (
            "max_entries_per_feed = -1",
            "retention.max_entries_per_feed",
            "0 (no limit) or more",
        ),
        (
            "max_database_size = \"512KB\"",
            "retention.max_database_size",
            "at least 1MB",
        ),
        (
            "max_database_size = \"lots\"",
            "retention.max_database_size",
            "invalid size",
        ),
        ("max_age = 30", "retention.max_age", "add quotes and a unit"),
        (
            "housekeeping_interval = \"0s\"",
            "retention.housekeeping_interval",
            "at least 1s",
        ),
        (
            "max_tombstones = -5",
            "retention.max_tombstones",
            "0 (no limit) or more",
        ),
        (
            "max_entries = 5",
            "retention.max_entries",
            "max_entries_per_feed",
        ),
    ];
    for (line, key, needle) in cases {
        let message = check_err(&format!("[retention]\n{line}\n"), key, 2);
        assert!(message.contains(needle), "{line}: {message}");
    }
    // Tombstones must stay bounded by age or count.
    let message = check_err(
        "[retention]\ntombstone_max_age = \"0s\"\nmax_tombstones = 0\n",
        "retention.max_tombstones",
        3,
    );
    assert!(message.contains("bounded"), "{message}");
}

#[test]
fn bytes_are_formatted_for_people() {
    for (n, text) in [
        (0, "0 B"),
        (999, "999 B"),
        (1_000, "1 KB"),
        (1_540_000, "1.5 MB"),
        (1_000_000_000, "1 GB"),
    ] {
        assert_eq!(format_bytes(n), text);
    }
}

#[test]
fn request_options_are_read_for_feeds_and_sites() {
    let config = ok(r#"
[[feed]]
url = "https://private.example.com/feed.xml"
user_agent = "  FriendlyReader/2.0 "
headers = { Cookie = "session=abc; theme=dark", "X-Api-Key" = " k3y " }
username = "ada"
password = " open sesame "
proxy = "http://reader:pw@proxy.lan:3128"

[[feed]]
url = "https://plain.example.com/feed.xml"

[[site]]
host = "paywalled.example"
headers = { Cookie = "subscriber=1" }
"#);
    let request = &config.feeds[0].request;
    assert_eq!(request.user_agent.as_deref(), Some("FriendlyReader/2.0"));
    // Header values and passwords are kept as written: spaces may matter.
    assert_eq!(
        request.headers,
        vec![
            ("Cookie".to_owned(), "session=abc; theme=dark".to_owned()),
            ("X-Api-Key".to_owned(), " k3y ".to_owned()),
        ]
    );
    assert_eq!(request.username.as_deref(), Some("ada"));
    assert_eq!(request.password.as_deref(), Some(" open sesame "));
    assert_eq!(
        request.proxy.as_deref(),
        Some("http://reader:pw@proxy.lan:3128/")
    );
    assert!(request.has_secrets());
    assert!(config.feeds[1].request.is_empty());
    assert!(!config.feeds[1].request.has_secrets());
    // A site rule with request options alone is a rule.
    assert_eq!(config.sites.len(), 1);
    assert_eq!(config.sites[0].request.headers.len(), 1);
    assert!(config.sites[0].keep.is_empty() && config.sites[0].drop.is_empty());
    // Debug output (a log line, a panic) never shows a secret.
    let debug = format!("{config:?}");
    for secret in ["abc", "k3y", "open sesame", "reader:pw", "subscriber=1"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    assert!(debug.contains("Cookie"), "{debug}");
}

#[test]
fn request_option_problems_name_key_and_line() {
    let feed = |extra: &str| format!("[[feed]]\nurl = \"https://a.example/f\"\n{extra}\n");
    let m = check_err(
        &feed("headers = { \"Bad Name\" = \"x\" }"),
        "feed[0].headers.Bad Name",
        3,
    );
    assert!(m.contains("invalid header name"), "{m}");
    let m = check_err(
        &feed("headers = { Host = \"x\" }"),
        "feed[0].headers.Host",
        3,
    );
    assert!(m.contains("cannot be set here"), "{m}");
    let m = check_err(
        &feed("headers = { \"user-agent\" = \"x\" }"),
        "feed[0].headers.user-agent",
        3,
    );
    assert!(m.contains("use the user_agent key"), "{m}");
    let m = check_err(
        &feed("headers = { Cookie = \"a\\nb\" }"),
        "feed[0].headers.Cookie",
        3,
    );
    // The value may be a secret: the message does not repeat it.
    assert!(
        m.contains("invalid value for header Cookie") && !m.contains("a\nb"),
        "{m}"
    );
    let m = check_err(
        &feed("headers = { Cookie = 1 }"),
        "feed[0].headers.Cookie",
        3,
    );
    assert!(m.contains("expected a string"), "{m}");
    let m = check_err(&feed("headers = \"Cookie: x\""), "feed[0].headers", 3);
    assert!(m.contains("expected a table of name = \"value\""), "{m}");
    let m = check_err(&feed("password = \"pw\""), "feed[0].password", 3);
    assert!(m.contains("needs a username"), "{m}");
    let m = check_err(
        &feed("proxy = \"socks5://127.0.0.1:9050\""),
        "feed[0].proxy",
        3,
    );
    assert!(m.contains("use an http:// or https:// proxy"), "{m}");
    let m = check_err(&feed("proxy = \"proxy.lan:3128\""), "feed[0].proxy", 3);
    assert!(m.contains("proxy"), "{m}");
    let m = check_err(&feed("username = \"  \""), "feed[0].username", 3);
    assert!(m.contains("must not be empty"), "{m}");
    let m = check_err(
        "[[site]]\nhost = \"example.com\"\npassword = \"pw\"\n",
        "site[0].password",
        3,
    );
    assert!(m.contains("needs a username"), "{m}");
    let m = check_err(&feed("cookie = \"x\""), "feed[0].cookie", 3);
    assert!(
        m.contains("known keys are") || m.contains("did you mean"),
        "{m}"
    );
}

#[test]
fn push_keys_are_read_and_checked() {
    let config = ok(r#"
[[output]]
name = "rust"
webhook = ["https://hooks.example.com/a", " https://hooks.example.com/b "]
webhook_secret = "  spaced secret "
ntfy = ["https://ntfy.sh/topic"]
"#);
    let output = &config.outputs[0];
    assert_eq!(
        output.webhook,
        ["https://hooks.example.com/a", "https://hooks.example.com/b"]
    );
    assert_eq!(
        output.webhook_secret,
        Some(crate::model::Secret("  spaced secret ".into()))
    );
    assert_eq!(output.ntfy, ["https://ntfy.sh/topic"]);
    assert!(!format!("{config:?}").contains("spaced secret"));

    let m = check_err(
        "[[output]]\nname = \"a\"\nwebhook_secret = \"s\"\n",
        "output[0].webhook_secret",
        3,
    );
    assert!(m.contains("set webhook"), "{m}");
    let m = check_err(
        "[[output]]\nname = \"a\"\nwebhook = [\"https://h.example/\"]\nwebhook_secret = \"\"\n",
        "output[0].webhook_secret",
        4,
    );
    assert!(m.contains("must not be empty"), "{m}");
    let m = check_err(
        "[[output]]\nname = \"a\"\nwebhook = [\"ftp://h.example/\"]\n",
        "output[0].webhook[0]",
        3,
    );
    assert!(m.contains("only http and https"), "{m}");
    let m = check_err(
        "[[output]]\nname = \"a\"\nntfy = \"https://ntfy.sh/t\"\n",
        "output[0].ntfy",
        3,
    );
    assert!(m.contains("write it as [\"https://ntfy.sh/t\"]"), "{m}");
}

#[test]
fn entry_rules_are_read_and_checked() {
    use crate::model::{EntryRule, RuleField};
    let config = ok(r#"
[[feed]]
url = "https://a.example/f"
keep = { title = "(?i)rust", categories = "^lang$" }
block = { author = "bot" }
"#);
    let rules = &config.feeds[0].rules;
    // Any order: one matching rule is enough.
    let mut keep = rules.keep.clone();
    keep.sort_by_key(|r| r.pattern.clone());
    assert_eq!(
        keep,
        [
            EntryRule {
                field: RuleField::Title,
                pattern: "(?i)rust".into()
            },
            EntryRule {
                field: RuleField::Categories,
                pattern: "^lang$".into()
            },
        ]
    );
    assert_eq!(rules.block.len(), 1);
    let feed = |extra: &str| format!("[[feed]]\nurl = \"https://a.example/f\"\n{extra}\n");
    let m = check_err(&feed("keep = { tittle = \"x\" }"), "feed[0].keep.tittle", 3);
    assert!(m.contains("title, content, author or categories"), "{m}");
    let m = check_err(&feed("block = { title = \"(\" }"), "feed[0].block.title", 3);
    assert!(m.contains("invalid regex"), "{m}");
    let m = check_err(&feed("keep = \"rust\""), "feed[0].keep", 3);
    assert!(m.contains("a table of part = \"regex\""), "{m}");
}

#[test]
fn page_feeds_read_their_selectors_and_report_each_mistake_with_key_and_line() {
    let config = ok(r#"
[[feed]]
url = "https://news.example/"
page = true
[feed.select]
item = "article.post"
title = "h2"
date = "time"
summary = ".lede"
image = "img.hero"

[[feed]]
url = "https://other.example/"
page = true
select = { item = "li", link = "a.permalink" }
"#);
    let page = config.feeds[0].page.as_ref().unwrap();
    assert_eq!(page.item, "article.post");
    assert_eq!(page.title.as_deref(), Some("h2"));
    assert_eq!(page.date.as_deref(), Some("time"));
    assert_eq!(page.summary.as_deref(), Some(".lede"));
    assert_eq!(page.image.as_deref(), Some("img.hero"));
    assert_eq!(page.link, None);
    let inline = config.feeds[1].page.as_ref().unwrap();
    assert_eq!(
        (inline.item.as_str(), inline.link.as_deref()),
        ("li", Some("a.permalink"))
    );

    // A selector that does not parse: its key and its line.
    let message = check_err(
        "[[feed]]\nurl = \"https://a.example/\"\npage = true\n[feed.select]\nitem = \"li\"\ntitle = \"h2[\"\n",
        "feed[0].select.title",
        6,
    );
    assert!(
        message.contains("invalid CSS selector \"h2[\""),
        "{message}"
    );
    check_err(
        "[[feed]]\nurl = \"https://a.example/\"\npage = true\nselect = { item = \"a:nosuch\" }\n",
        "feed[0].select.item",
        4,
    );
    // page = true without selectors, and the other way round.
    let message = check_err(
        "[[feed]]\nurl = \"https://a.example/\"\npage = true\n",
        "feed[0].select",
        3,
    );
    assert!(message.contains("feeds test"), "{message}");
    check_err(
        "[[feed]]\nurl = \"https://a.example/\"\npage = true\nselect = { title = \"h2\" }\n",
        "feed[0].select.item",
        4,
    );
    check_err(
        "[[feed]]\nurl = \"https://a.example/\"\nselect = { item = \"li\" }\n",
        "feed[0].select",
        3,
    );
    // A misspelt part, and a part written in the [[feed]] itself.
    let message = check_err(
        "[[feed]]\nurl = \"https://a.example/\"\npage = true\nselect = { item = \"li\", titl = \"h2\" }\n",
        "feed[0].select.titl",
        4,
    );
    assert!(message.contains("did you mean \"title\""), "{message}");
    let message = check_err(
        "[[feed]]\nurl = \"https://a.example/\"\nitem = \"li\"\n",
        "feed[0].item",
        3,
    );
    assert!(message.contains("[feed.select]"), "{message}");
}

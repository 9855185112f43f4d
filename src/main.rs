//! The storegw command line.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const DEFAULT_CONFIG: &str = "/etc/storegw/storegw.toml";

#[derive(Parser)]
#[command(
    name = "storegw",
    version,
    about = "In-store gateway: BLE beacons, Wi-Fi footfall and POS transactions to the CDP over MQTT"
)]
struct Cli {
    /// Log format: auto (journald under systemd, text elsewhere), text, json or journald.
    #[arg(long, global = true, value_parser = ["auto", "text", "json", "journald"])]
    log_format: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

/// What `storegw calibrate` fits.
#[cfg(feature = "calibrate")]
#[derive(Subcommand)]
enum CalibrateWhat {
    /// Wi-Fi people counting: DIR holds `<day>.pcap` + `<day>.truth.json` (people counted per
    /// minute); prints `[sources.wifi.calibration]` on stdout. Reads only; writes nothing.
    Wifi {
        dir: PathBuf,
        /// The store's configuration (its `[sources.wifi]` settings); defaults without it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway until SIGTERM/SIGINT.
    Run {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Run a simulated store against an embedded broker and show what arrives.
    Demo {
        /// Seconds to run.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Simulated events per second.
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Validate a configuration file without starting anything.
    CheckConfig {
        #[arg(default_value = DEFAULT_CONFIG)]
        path: PathBuf,
    },
    /// Fit a store's calibration from days with people counted; prints a TOML section to
    /// append to the configuration.
    #[cfg(feature = "calibrate")]
    Calibrate {
        #[command(subcommand)]
        what: CalibrateWhat,
    },
    /// Run a recorded input through the pipeline; print the events (or publish them) and a
    /// summary line.
    Replay {
        /// Android btsnoop HCI log, or JSON lines of advertising reports.
        #[arg(long, group = "input")]
        ble: Option<PathBuf>,
        /// pcap or pcapng capture (radiotap or bare 802.11).
        #[arg(long, group = "input")]
        wifi: Option<PathBuf>,
        /// POS export: POSLog XML, CSV, JSON lines, Square or Shopify JSON.
        #[arg(long, group = "input")]
        pos: Option<PathBuf>,
        /// Input format where the content does not tell (poslog, csv, jsonl, square, shopify).
        #[arg(long)]
        format: Option<String>,
        /// Configuration (thresholds, broker); the embedded demo config without it.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Send the events to the configured broker instead of printing them.
        #[arg(long)]
        publish: bool,
    },
    /// Measure throughput and footprint beside same-run baselines; writes a markdown report.
    #[cfg(feature = "bench")]
    Bench {
        /// Report path (the raw figures go next to it as .json); default BENCHMARKS.md for a
        /// full run. A run with --only prints its table and writes no report unless --out is
        /// given, so a partial run never replaces the full one.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Events for the end-to-end and spool measurements.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Backlog size for the bytes-on-disk and drain measurements.
        #[arg(long, default_value_t = 1_000_000)]
        backlog: u64,
        /// Seconds of the footprint run at typical store load.
        #[arg(long, default_value_t = 60)]
        footprint_secs: u64,
        /// Gateways in the fleet simulation (0 skips it).
        #[arg(long, default_value_t = 200)]
        fleet: usize,
        /// Seconds the broker stays down in the fleet simulation.
        #[arg(long, default_value_t = 10)]
        fleet_outage_secs: u64,
        /// Transactions of the POS push measurement in requests of 1000.
        #[arg(long, default_value_t = 200_000)]
        pos_bulk: u64,
        /// Transactions of the POS push measurement one per request (0 skips it).
        #[arg(long, default_value_t = 200_000)]
        pos_single: u64,
        /// Concurrent connections of the one-per-request POS push.
        #[arg(long, default_value_t = 8)]
        pos_clients: usize,
        /// Run only these measurements (comma-separated: spool, e2e, backlog, footprint, fleet,
        /// fleet-config, ready, size, parsers, sealing, pos-push); the report then holds only their rows.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    #[cfg(feature = "central")]
    /// Subscribe to a store's live feed, validate every payload against the JSON Schemas,
    /// drop redelivered events by id, print one line per event or a running summary.
    Tail {
        #[command(flatten)]
        conn: storegw::ops::tail::BrokerConn,
        /// Store id to follow.
        #[arg(long)]
        store: String,
        /// Only this gateway (default: every gateway of the store).
        #[arg(long)]
        gateway: Option<String>,
        /// Print running totals every 5 s instead of one line per event.
        #[arg(long)]
        summary: bool,
        /// Print each event as one JSON line (with `store` and `gateway`), e.g. for `unseal`.
        #[arg(long, conflicts_with = "summary")]
        json: bool,
        /// Stop after this many distinct events.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long = "for")]
        for_secs: Option<u64>,
    },
    #[cfg(feature = "central")]
    /// One line per gateway from the retained status documents, worst first. Exit status: 0
    /// when every gateway is healthy, 1 when any needs attention (or none reported), 2 when the
    /// broker could not be read.
    Fleet {
        #[command(flatten)]
        conn: storegw::ops::tail::BrokerConn,
        /// Only this store (default: every store).
        #[arg(long)]
        store: Option<String>,
        /// Print a JSON document instead of lines.
        #[arg(long)]
        json: bool,
        /// Longest wait in seconds for the retained documents.
        #[arg(long, default_value_t = 3.0)]
        wait: f64,
        /// A backlog older than this many seconds makes a gateway lagging.
        #[arg(long, default_value_t = 300.0)]
        max_age: f64,
        /// An online document older than this many seconds makes a gateway stale.
        #[arg(long, default_value_t = 300.0)]
        stale: f64,
    },
    #[cfg(feature = "central")]
    /// Create an Ed25519 signing key for remote configuration: PREFIX.key (0600) and PREFIX.pub.
    /// With --recipient: the central platform's X25519 key pair for sealed customer
    /// identifiers (PREFIX.pub goes into privacy.recipient_keys_file).
    Keygen {
        #[arg(long)]
        out: PathBuf,
        /// Make an X25519 recipient key pair (sealed customer identifiers) instead.
        #[cfg(feature = "unseal")]
        #[arg(long)]
        recipient: bool,
    },
    /// Open the sealed customer tokens of events (JSON lines from `replay`, `tail --json` or
    /// broker batches) on stdin or in files, writing them with the values opened (or re-keyed).
    #[cfg(feature = "unseal")]
    Unseal {
        /// Private key file from `storegw keygen --recipient` (repeat for older keys).
        #[arg(long, required = true)]
        key: Vec<PathBuf>,
        /// Write hex(HMAC-SHA256(KEY_FILE, tag ":" value)) instead of the raw value.
        #[arg(long)]
        rekey: Option<PathBuf>,
        /// Store id of lines that carry none (`storegw replay` output).
        #[arg(long)]
        store: Option<String>,
        /// Input files (default: stdin).
        files: Vec<PathBuf>,
    },
    #[cfg(feature = "central")]
    /// Sign a configuration overlay (TOML with an integer `version`) with a private key.
    Sign {
        file: PathBuf,
        #[arg(long)]
        key: PathBuf,
        /// Output (default: FILE.signed).
        #[arg(long)]
        out: Option<PathBuf>,
        /// How long the document stays valid when FILE names no `not_after` (at most 90d).
        #[arg(long, default_value = "30d")]
        valid_for: storegw::config::Dur,
    },
    #[cfg(feature = "central")]
    /// Run a gateway's verification of a signed document offline and print the result (exit 1
    /// with the reason when a gateway would reject it).
    Verify {
        file: PathBuf,
        /// Trusted public key file (as in [remote] public_key_file).
        #[arg(long)]
        public_key: PathBuf,
        /// The gateway's local configuration to merge over and validate.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Version the gateway last applied (the document must be newer).
        #[arg(long, default_value_t = 0)]
        last_version: i64,
    },
    #[cfg(feature = "central")]
    /// Publish a signed document retained (QoS 1) to a gateway's config topic, or the fleet's.
    Push {
        file: PathBuf,
        #[command(flatten)]
        conn: storegw::ops::tail::BrokerConn,
        /// Store id.
        #[arg(long)]
        store: String,
        /// Gateway id (default: the fleet-wide topic {prefix}/_fleet/config).
        #[arg(long)]
        gateway: Option<String>,
    },
    #[cfg(feature = "central")]
    /// Sign a command for one gateway (status, reconnect, rotate-keys, reload), publish it and
    /// print the gateway's answer (exit 1 when refused, 3 when no answer came).
    Command {
        /// status | reconnect | rotate-keys | reload
        #[arg(value_parser = ["status", "reconnect", "rotate-keys", "reload"])]
        action: String,
        #[command(flatten)]
        conn: storegw::ops::tail::BrokerConn,
        /// Store id.
        #[arg(long)]
        store: String,
        /// Gateway id.
        #[arg(long)]
        gateway: String,
        /// Private key (from `storegw keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Validity of the command, e.g. 10m (at most 24h).
        #[arg(long, default_value = "10m")]
        ttl: storegw::config::Dur,
        /// How long to wait for the answer, e.g. 30s.
        #[arg(long, default_value = "30s")]
        wait: storegw::config::Dur,
    },
    /// Spool depth, oldest age and drops, read from the state directory.
    Status {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

fn init_logging(level: &str, format: &str) {
    storegw::ops::logging::init(level, format);
}

fn load(path: &std::path::Path) -> Result<storegw::config::Config, ExitCode> {
    storegw::config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
}

/// Runs a command's future on a fresh runtime; an error is printed after `what` and exits 1.
fn run_to_exit(what: &str, fut: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let rt = match runtime() {
        Ok(r) => r,
        Err(c) => return c,
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{what}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// glibc's allocator raises its mmap threshold each time a large block is freed (up to 32 MiB),
/// so after the first bulk POS push the request bodies, parse buffers and spool chunks of the
/// next ones (a few hundred KiB each) came from the heap, where they fragmented it and stayed: a
/// 200,000-transaction push peaked at 58 MiB RSS that way. The threshold is fixed instead, at
/// 512 KiB, above the buffers a bulk push needs for every request (a 1000-transaction body of
/// about 0.4 MiB, a 256 KiB MQTT batch), and a heap gives memory back once more than 1 MiB is
/// free at its top: mapped afresh and unmapped, those buffers had cost a page fault per 4 KiB,
/// 480 per request and 10 to 20% of the push's CPU (BENCHMARKS.md, "POS push", item 12). Two
/// arenas instead of up to sixteen (eight per core) saved a few MiB more. Other C libraries
/// (musl) have no such settings and need none.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; it runs before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Blocks above this are mapped for themselves and unmapped when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 512 * 1024;
/// Free memory at the top of a heap beyond this is given back to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: i32 = 1024 * 1024;

fn main() -> ExitCode {
    tune_allocator();
    storegw::privacy::init_local_offset();
    let cli = Cli::parse();
    let fmt_override = cli.log_format.clone();
    match cli.cmd {
        Cmd::CheckConfig { path } => match storegw::config::load(&path) {
            Ok(cfg) => {
                println!("{}: ok", path.display());
                println!("{}", storegw::config::customer_summary(&cfg));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Cmd::Run { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logging(
                &cfg.log.level,
                fmt_override.as_deref().unwrap_or(&cfg.log.format),
            );
            let rt = match runtime() {
                Ok(r) => r,
                Err(c) => return c,
            };
            match rt.block_on(storegw::daemon::run(cfg, &config)) {
                Ok(storegw::daemon::RunEnd::Stopped) => ExitCode::SUCCESS,
                Ok(storegw::daemon::RunEnd::Restart) => {
                    ExitCode::from(storegw::daemon::RESTART_EXIT_CODE)
                }
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("storegw: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Demo { duration, rate } => {
            // The embedded broker stays quiet: rumqttd 0.20 logs a client's clean DISCONNECT
            // (what the uplink sends on stop) as an ERROR, "router-drop" or "no-connection id N
            // is already gone", whichever of its two disconnect paths runs second.
            // STOREGW_LOG=rumqttd=info shows its log.
            init_logging(
                "warn,rumqttd=off",
                fmt_override.as_deref().unwrap_or("text"),
            );
            run_to_exit(
                "demo failed",
                storegw::demo::run(Duration::from_secs(duration), rate),
            )
        }
        #[cfg(feature = "calibrate")]
        Cmd::Calibrate {
            what: CalibrateWhat::Wifi { dir, config },
        } => {
            let wifi = match config {
                Some(path) => match storegw::config::load(&path) {
                    Ok(c) => c.sources.wifi,
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::from(2);
                    }
                },
                None => storegw::source::wifi::WifiConfig::default(),
            };
            match storegw::source::wifi::calibrate::run(&dir, &wifi) {
                Ok(section) => {
                    print!("{section}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Replay {
            ble,
            wifi,
            pos,
            format,
            config,
            publish,
        } => {
            init_logging("warn", fmt_override.as_deref().unwrap_or("text"));
            let mut r =
                match storegw::source::replay::Replay::new(config.as_deref(), format, publish) {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::from(2);
                    }
                };
            let rt = match runtime() {
                Ok(r) => r,
                Err(c) => return c,
            };
            let summary = match (ble, wifi, pos) {
                (Some(p), _, _) => storegw::source::replay("ble", &p, &mut r),
                (_, Some(p), _) => storegw::source::replay("wifi", &p, &mut r),
                (_, _, Some(p)) => storegw::source::replay("pos", &p, &mut r),
                _ => Err("give one input: --ble FILE, --wifi FILE or --pos FILE".into()),
            };
            let done = match summary {
                Ok(s) => rt.block_on(r.finish(s)),
                Err(e) => Err(e),
            };
            match done {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("replay: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        #[cfg(feature = "bench")]
        Cmd::Bench {
            out,
            events,
            backlog,
            footprint_secs,
            fleet,
            fleet_outage_secs,
            pos_bulk,
            pos_single,
            pos_clients,
            only,
        } => {
            init_logging("error", fmt_override.as_deref().unwrap_or("text"));
            let out = match (out, only.is_empty()) {
                (Some(path), _) => Some(path),
                (None, true) => Some(PathBuf::from("BENCHMARKS.md")),
                (None, false) => None,
            };
            let opts = storegw::bench::BenchOptions {
                out,
                events,
                backlog,
                footprint_s: footprint_secs,
                fleet,
                fleet_outage_s: fleet_outage_secs,
                pos: storegw::bench::PushLoad {
                    bulk: pos_bulk,
                    single: pos_single,
                    clients: pos_clients,
                },
                only,
            };
            run_to_exit("bench", storegw::bench::run(opts))
        }
        #[cfg(feature = "central")]
        Cmd::Tail {
            conn,
            store,
            gateway,
            summary,
            json,
            count,
            for_secs,
        } => {
            init_logging("warn", fmt_override.as_deref().unwrap_or("text"));
            let rt = match runtime() {
                Ok(r) => r,
                Err(c) => return c,
            };
            let opts = storegw::ops::tail::TailOptions {
                conn,
                store,
                gateway,
                summary,
                json,
                count,
                duration: for_secs.map(Duration::from_secs),
            };
            match rt.block_on(storegw::ops::tail::run(opts)) {
                // Invalid payloads make the exit status 1, so scripts can check a feed.
                Ok(t) if t.invalid_events + t.invalid_messages > 0 => ExitCode::FAILURE,
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tail: {e}");
                    ExitCode::from(2)
                }
            }
        }
        #[cfg(feature = "central")]
        Cmd::Fleet {
            conn,
            store,
            json,
            wait,
            max_age,
            stale,
        } => {
            init_logging("warn", fmt_override.as_deref().unwrap_or("text"));
            let rt = match runtime() {
                Ok(r) => r,
                Err(c) => return c,
            };
            let opts = storegw::ops::fleet::FleetOptions {
                conn,
                store,
                // NaN passes `clamp` unchanged (and `from_secs_f64` panics on it): read as the least.
                wait: Duration::from_secs_f64(if wait.is_nan() {
                    0.1
                } else {
                    wait.clamp(0.1, 600.0)
                }),
                max_age_s: max_age,
                stale_s: stale,
            };
            match rt.block_on(storegw::ops::fleet::run(&opts)) {
                Ok(list) => {
                    if json {
                        println!("{}", storegw::ops::fleet::json_report(&list));
                    } else if list.is_empty() {
                        println!("no gateway has published a status document");
                    } else {
                        for h in &list {
                            println!("{}", storegw::ops::fleet::line(h));
                        }
                    }
                    let ok = !list.is_empty()
                        && list
                            .iter()
                            .all(|h| h.severity == storegw::ops::fleet::Severity::Ok);
                    if ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("fleet: {e}");
                    ExitCode::from(2)
                }
            }
        }
        #[cfg(feature = "central")]
        #[cfg(feature = "unseal")]
        Cmd::Keygen {
            out,
            recipient: true,
        } => match storegw::privacy::unseal::keygen_recipient(&out) {
            Ok(id) => {
                println!(
                    "recipient key {id}: private {}.key (central platform only, never on a gateway), public {}.pub (privacy.recipient_keys_file)",
                    out.display(),
                    out.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("keygen: {e}");
                ExitCode::FAILURE
            }
        },
        #[cfg(feature = "unseal")]
        Cmd::Unseal {
            key,
            rekey,
            store,
            files,
        } => {
            let opts = storegw::privacy::unseal::UnsealOptions {
                keys: key,
                rekey,
                store,
            };
            let stdout = std::io::stdout();
            let stderr = std::io::stderr();
            let result = if files.is_empty() {
                storegw::privacy::unseal::run(
                    &opts,
                    std::io::stdin().lock(),
                    stdout.lock(),
                    stderr.lock(),
                )
            } else {
                let mut total = storegw::privacy::unseal::UnsealTotals::default();
                let mut res = Ok(total);
                for f in &files {
                    let file = match std::fs::File::open(f) {
                        Ok(h) => h,
                        Err(e) => {
                            res = Err(format!("{}: {e}", f.display()));
                            break;
                        }
                    };
                    match storegw::privacy::unseal::run(
                        &opts,
                        std::io::BufReader::new(file),
                        stdout.lock(),
                        stderr.lock(),
                    ) {
                        Ok(t) => {
                            total.lines += t.lines;
                            total.opened += t.opened;
                            total.failed += t.failed;
                            total.bad_lines += t.bad_lines;
                            res = Ok(total);
                        }
                        Err(e) => {
                            res = Err(format!("{}: {e}", f.display()));
                            break;
                        }
                    }
                }
                res
            };
            match result {
                Ok(t) => {
                    eprintln!(
                        "unseal: {} lines, {} tokens opened, {} not opened, {} lines not JSON",
                        t.lines, t.opened, t.failed, t.bad_lines
                    );
                    if t.failed + t.bad_lines > 0 {
                        ExitCode::FAILURE
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("unseal: {e}");
                    ExitCode::from(2)
                }
            }
        }
        #[cfg(feature = "central")]
        Cmd::Keygen { out, .. } => match storegw::remote::tools::keygen(&out) {
            Ok(id) => {
                println!(
                    "key {id}: private {}.key (keep it off the gateways), public {}.pub",
                    out.display(),
                    out.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("keygen: {e}");
                ExitCode::FAILURE
            }
        },
        #[cfg(feature = "central")]
        Cmd::Sign {
            file,
            key,
            out,
            valid_for,
        } => match storegw::remote::tools::sign_file(&file, &key, out.as_deref(), valid_for.0) {
            Ok(p) => {
                println!("{}", p.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sign: {e}");
                ExitCode::FAILURE
            }
        },
        #[cfg(feature = "central")]
        Cmd::Verify {
            file,
            public_key,
            config,
            last_version,
        } => {
            use storegw::remote::tools::{verify_file, VerifyOutcome};
            match verify_file(&file, &public_key, config.as_deref(), last_version) {
                Ok(VerifyOutcome::Accepted(text)) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Ok(VerifyOutcome::Rejected(r)) => {
                    eprintln!("rejected: {}", r.reason());
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("verify: {e}");
                    ExitCode::from(2)
                }
            }
        }
        #[cfg(feature = "central")]
        Cmd::Command {
            action,
            conn,
            store,
            gateway,
            key,
            ttl,
            wait,
        } => {
            init_logging("warn", fmt_override.as_deref().unwrap_or("text"));
            let Some(action) = storegw::remote::command::Action::parse(&action) else {
                eprintln!("unknown command `{action}`");
                return ExitCode::from(2);
            };
            let opts = storegw::remote::tools::CommandOptions {
                conn,
                store,
                gateway,
                key,
                ttl: ttl.0,
                wait: wait.0,
            };
            let rt = match runtime() {
                Ok(r) => r,
                Err(c) => return c,
            };
            match rt.block_on(storegw::remote::tools::command(&opts, action)) {
                Ok(answer) => {
                    println!("{answer}");
                    if answer["result"] == "done" {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("command: {e}");
                    ExitCode::from(3)
                }
            }
        }
        #[cfg(feature = "central")]
        Cmd::Push {
            conn,
            file,
            store,
            gateway,
        } => {
            init_logging("warn", fmt_override.as_deref().unwrap_or("text"));
            let opts = storegw::remote::tools::PushOptions {
                conn,
                store,
                gateway,
            };
            let rt = match runtime() {
                Ok(r) => r,
                Err(c) => return c,
            };
            match rt.block_on(storegw::remote::tools::push(&opts, &file)) {
                Ok(topic) => {
                    println!("published retained on {topic}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("push: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Status { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            // The remote configuration state the gateway left behind, when it uses one.
            let remote_state = cfg.remote.as_ref().map(|_| {
                match storegw::remote::state::StateDir::open(&cfg.gateway.state_dir)
                    .and_then(|d| d.load())
                {
                    Ok(st) => st.status_object(),
                    Err(e) => serde_json::json!({ "error": e }),
                }
            });
            match storegw::ops::status::offline_report(&cfg, remote_state) {
                Ok(s) => {
                    println!("{s}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

//! A PostgreSQL server for tests.
//!
//! [`database_url`] answers, in this order:
//!
//! 1. `DATABASE_URL`, when it is set (nothing is checked or started);
//! 2. `postgres://postgres@127.0.0.1:5432/test`, when a server answers there;
//! 3. a private server on `127.0.0.1:54329`, started once per machine with the machine's own
//!    `initdb` and `pg_ctl` (Debian package `postgresql`), whose data directory is
//!    `<target dir>/entlog-test-pg` (`CARGO_TARGET_DIR`, else the `target` directory the test
//!    binary runs from, else the system's temporary directory). When running as root, `initdb`
//!    and `pg_ctl` run as the `postgres` user through `runuser`, and the data directory moves to
//!    the temporary directory if the `postgres` user cannot reach the target directory.
//!
//! The private server has trust authentication, a superuser `postgres`, a database `test`,
//! `max_connections = 200` and otherwise PostgreSQL's default settings (`fsync` on). Its unix
//! socket is in its data directory and its log is `<data dir>/server.log`. Test binaries that
//! race to start it serialize on an exclusive lock of `<data dir>.lock`; whoever comes later
//! reuses the server that answers. It is left running for later test binaries: stop it with
//! `pg_ctl -D <target dir>/entlog-test-pg stop` (as root:
//! `runuser -u postgres -- pg_ctl -D <target dir>/entlog-test-pg stop`), and delete the
//! directory to start afresh.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::postgres::PgConnection;
use tokio::sync::OnceCell;

/// The server that is tried when `DATABASE_URL` is not set.
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// The private server's port, on 127.0.0.1.
const PRIVATE_PORT: u16 = 54329;
/// The private server's test database.
const PRIVATE_URL: &str = "postgres://postgres@127.0.0.1:54329/test";
/// The private server's maintenance database, to create `test` from.
const PRIVATE_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:54329/postgres";
/// How long a server may take to accept a connection before it counts as not answering.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The data directory's name, under the target directory.
const DATA_DIR_NAME: &str = "entlog-test-pg";
/// A line that marks a data directory as configured by this module.
const CONFIG_MARKER: &str = "# entlog test server";
/// What to do when no server can be had.
const ADVICE: &str = "To run the tests, point DATABASE_URL at a running PostgreSQL server \
     (trust auth, database `test`), or install PostgreSQL (Debian package `postgresql`) so that \
     a private server can be started.";

static URL: OnceCell<String> = OnceCell::const_new();

/// URL of a PostgreSQL server for tests: `DATABASE_URL`, else `postgres://postgres@127.0.0.1:5432/test`;
/// where nothing answers there, a private server started once per machine under the target dir.
///
/// Resolved once per process; `DATABASE_URL` is used as it is, without a check.
///
/// The private server answers at `postgres://postgres@127.0.0.1:54329/test` (trust auth,
/// `max_connections = 200`, PostgreSQL's defaults otherwise). It is made with the machine's
/// `initdb` and `pg_ctl` (from `PATH`, else `/usr/lib/postgresql/*/bin`; as root they run as the
/// `postgres` user via `runuser`) in `<target dir>/entlog-test-pg`, where the target dir is
/// `CARGO_TARGET_DIR`, else the `target` directory the test binary runs from, else the system's
/// temporary directory (also used as root when the `postgres` user cannot reach the target dir).
/// Test binaries that race to start it take turns on an exclusive lock of
/// `<target dir>/entlog-test-pg.lock`, and reuse whatever answers on the port.
///
/// The server is left running for later test binaries. Stop it with
/// `pg_ctl -D <target dir>/entlog-test-pg stop` (as root:
/// `runuser -u postgres -- pg_ctl -D <target dir>/entlog-test-pg stop`); delete that
/// directory to start afresh. Its log is `<target dir>/entlog-test-pg/server.log`.
///
/// # Panics
///
/// When no server answers and none can be started: no `initdb`/`pg_ctl` on the machine, or
/// one of them failed (the panic message carries its output and the server's log).
pub async fn database_url() -> String {
    URL.get_or_init(resolve).await.clone()
}

async fn resolve() -> String {
    if let Some(url) = std::env::var_os("DATABASE_URL") {
        return url
            .into_string()
            .unwrap_or_else(|url| panic!("DATABASE_URL is not valid UTF-8: {url:?}"));
    }
    if answers(DEFAULT_URL).await {
        return DEFAULT_URL.to_owned();
    }
    if answers(PRIVATE_URL).await {
        return PRIVATE_URL.to_owned();
    }
    start_private().await;
    PRIVATE_URL.to_owned()
}

/// Whether a connection to `url` succeeds within [`CONNECT_TIMEOUT`].
async fn answers(url: &str) -> bool {
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(url)).await {
        Ok(Ok(conn)) => {
            // Closing politely is a courtesy; the server copes with a dropped socket too.
            let _ = conn.close().await;
            true
        }
        Ok(Err(_)) | Err(_) => false,
    }
}

/// Runs `f` on tokio's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(err) => match err.try_into_panic() {
            Ok(payload) => std::panic::resume_unwind(payload),
            Err(err) => panic!("test server setup was cancelled: {err}"),
        },
    }
}

/// Starts (or reuses) the private server, and makes sure it has a database `test`.
async fn start_private() {
    let root = blocking(is_root).await;
    let dir = blocking(move || data_dir(root)).await;
    let lock_path = with_suffix(&dir, ".lock");
    let lock = {
        let lock_path = lock_path.clone();
        blocking(move || {
            if let Some(parent) = lock_path.parent() {
                std::fs::create_dir_all(parent)
                    .unwrap_or_else(|err| panic!("cannot create {}: {err}", parent.display()));
            }
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .unwrap_or_else(|err| panic!("cannot open {}: {err}", lock_path.display()));
            file.lock()
                .unwrap_or_else(|err| panic!("cannot lock {}: {err}", lock_path.display()));
            file
        })
        .await
    };

    // Another test binary may have started it while this one waited for the lock.
    if !answers(PRIVATE_ADMIN_URL).await {
        let bin = blocking(find_bin_dir).await;
        {
            let dir = dir.clone();
            let bin = bin.clone();
            blocking(move || init_data_dir(&bin, &dir, root)).await;
        }
        let started = {
            let dir = dir.clone();
            let bin = bin.clone();
            blocking(move || pg_ctl_start(&bin, &dir, root)).await
        };
        if let Err(failure) = started {
            // Someone else's server may have taken the port meanwhile (a test binary whose
            // data directory is elsewhere, such as a doctest's): use it if it answers.
            if !answers(PRIVATE_ADMIN_URL).await {
                let log = {
                    let dir = dir.clone();
                    blocking(move || read_log(&dir)).await
                };
                let dir = dir.display();
                let pg_ctl = bin.join("pg_ctl");
                let pg_ctl = pg_ctl.display();
                let runuser = if root { "runuser -u postgres -- " } else { "" };
                panic!(
                    "cannot start the PostgreSQL server for tests: {failure}\n\n\
                     server log ({dir}/server.log):\n{log}\n\n\
                     Fix the cause above; to start afresh, stop any server left in {dir} \
                     (`{runuser}{pg_ctl} -D {dir} stop`) and delete that directory.\n\n{ADVICE}"
                );
            }
        }
    }
    create_test_database().await;
    drop(lock);
}

/// Creates the database `test` on the private server, unless it exists.
async fn create_test_database() {
    let mut conn = connect_patiently(PRIVATE_ADMIN_URL).await;
    let exists: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = 'test'")
            .fetch_optional(&mut conn)
            .await
            .unwrap_or_else(|err| panic!("cannot list the test server's databases: {err}"));
    if exists.is_none()
        && let Err(err) = sqlx::query("CREATE DATABASE test").execute(&mut conn).await
    {
        // 42P04: duplicate_database; 23505: a concurrent CREATE DATABASE won the race.
        let code = err.as_database_error().and_then(|e| e.code());
        if !matches!(code.as_deref(), Some("42P04" | "23505")) {
            panic!("cannot create the database `test` on {PRIVATE_ADMIN_URL}: {err}");
        }
    }
    let _ = conn.close().await;
}

/// Connects to `url`, retrying for a few seconds while the server comes up.
async fn connect_patiently(url: &str) -> PgConnection {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(url)).await {
            Ok(Ok(conn)) => return conn,
            Ok(Err(err)) if attempt >= 10 => panic!("cannot connect to {url}: {err}\n\n{ADVICE}"),
            Err(_) if attempt >= 10 => panic!("cannot connect to {url}: timed out\n\n{ADVICE}"),
            Ok(Err(_)) | Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Whether this process's effective user is root.
fn is_root() -> bool {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        // "Uid:" real, effective, saved set, filesystem.
        if let Some(euid) = status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
        {
            return euid == "0";
        }
    }
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// `<target dir>/entlog-test-pg`; see the module docs.
fn data_dir(root: bool) -> PathBuf {
    let preferred = target_dir().map(|target| target.join(DATA_DIR_NAME));
    let fallback = std::env::temp_dir().join(DATA_DIR_NAME);
    match preferred {
        Some(dir) if !root || postgres_can_reach(&dir) => dir,
        _ => fallback,
    }
}

/// The workspace's target directory, if it can be told.
fn target_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        if dir.is_absolute() {
            return Some(dir);
        }
        // A relative one is relative to where cargo ran, which this process cannot know:
        // fall through to the test binary's location.
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .find(|dir| dir.file_name().is_some_and(|name| name == "target"))
        .map(Path::to_path_buf)
}

/// Whether the `postgres` user can get to `dir`'s parent (it need not be able to write there:
/// `dir` itself is created by root and handed over).
fn postgres_can_reach(dir: &Path) -> bool {
    let Some(parent) = dir.parent() else {
        return false;
    };
    if std::fs::create_dir_all(parent).is_err() {
        return false;
    }
    Command::new("runuser")
        .args(["-u", "postgres", "--", "test", "-x"])
        .arg(parent)
        .current_dir("/")
        .output()
        .is_ok_and(|out| out.status.success())
}

/// `path` with `suffix` appended to its last component.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A directory holding both `initdb` and `pg_ctl`: from `PATH`, else the newest
/// `/usr/lib/postgresql/<version>/bin`.
fn find_bin_dir() -> PathBuf {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    if let Some(dir) = on_path.into_iter().find(|dir| has_both(dir)) {
        return dir;
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(str::parse)
                .collect::<Result<Vec<u32>, _>>()
                .ok()?;
            let bin = entry.path().join("bin");
            has_both(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server for tests: nothing answers on {DEFAULT_URL}, DATABASE_URL is \
             not set, and neither `initdb` and `pg_ctl` on PATH nor \
             /usr/lib/postgresql/*/bin/{{initdb,pg_ctl}} exist to start a private one \
             (`apt-get install -y postgresql` installs them).\n\n{ADVICE}"
        ),
    }
}

/// `program args…`, as the `postgres` user when running as root.
fn server_command(program: &Path, root: bool) -> Command {
    let mut command = if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    };
    // The caller's directory may be out of the postgres user's reach.
    command.current_dir("/");
    // The server's own settings come from its data directory, not from the caller's libpq ones.
    for var in [
        "PGDATA",
        "PGPORT",
        "PGHOST",
        "PGUSER",
        "PGDATABASE",
        "PGOPTIONS",
    ] {
        command.env_remove(var);
    }
    command
}

/// Describes a command for messages.
fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs `command`, returning a full account of it on failure.
fn run(command: &mut Command) -> Result<Output, String> {
    let text = describe(command);
    match command.output() {
        Ok(out) if out.status.success() => Ok(out),
        Ok(out) => Err(format!(
            "`{text}` failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim_end(),
            String::from_utf8_lossy(&out.stderr).trim_end(),
        )),
        Err(err) => Err(format!("cannot run `{text}`: {err}")),
    }
}

/// Runs `command`, panicking with a full account of it on failure.
fn run_or_panic(command: &mut Command) {
    if let Err(failure) = run(command) {
        panic!("cannot set up the PostgreSQL server for tests: {failure}\n\n{ADVICE}");
    }
}

/// Initializes `dir` as a data directory unless a complete one is there.
fn init_data_dir(bin: &Path, dir: &Path, root: bool) {
    let config = dir.join("postgresql.conf");
    let complete = dir.join("PG_VERSION").is_file()
        && std::fs::read_to_string(&config).is_ok_and(|text| text.contains(CONFIG_MARKER));
    if complete {
        return;
    }
    // Nothing or a half-made directory (an interrupted initdb): start it over.
    if dir.exists() {
        std::fs::remove_dir_all(dir).unwrap_or_else(|err| {
            panic!(
                "cannot remove the incomplete test server directory {}: {err}",
                dir.display()
            )
        });
    }
    std::fs::create_dir_all(dir)
        .unwrap_or_else(|err| panic!("cannot create {}: {err}", dir.display()));
    if root {
        // initdb refuses to run as root: the directory goes to the postgres user.
        run_or_panic(Command::new("chown").arg("postgres").arg(dir));
    }
    run_or_panic(
        server_command(&bin.join("initdb"), root)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "-D",
            ])
            .arg(dir),
    );

    // A unix socket path is limited to 107 bytes; past that, TCP only.
    let socket = dir.join(format!(".s.PGSQL.{PRIVATE_PORT}.lock"));
    let socket_dir = if socket.as_os_str().len() < 100 {
        dir.to_string_lossy().replace('\'', "''")
    } else {
        String::new()
    };
    let settings = format!(
        "\n{CONFIG_MARKER}\n\
         listen_addresses = '127.0.0.1'\n\
         port = {PRIVATE_PORT}\n\
         unix_socket_directories = '{socket_dir}'\n\
         max_connections = 200\n"
    );
    File::options()
        .append(true)
        .open(&config)
        .and_then(|mut file| file.write_all(settings.as_bytes()))
        .unwrap_or_else(|err| panic!("cannot configure {}: {err}", config.display()));
}

/// Starts the server of `dir` and waits until it accepts connections.
fn pg_ctl_start(bin: &Path, dir: &Path, root: bool) -> Result<(), String> {
    let mut command = server_command(&bin.join("pg_ctl"), root);
    command
        .arg("-D")
        .arg(dir)
        .arg("-l")
        .arg(dir.join("server.log"))
        .args(["-w", "-t", "120", "start"]);
    run(&mut command).map(drop)
}

/// The end of the server's log, for messages.
fn read_log(dir: &Path) -> String {
    let path = dir.join("server.log");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(50)..].join("\n")
        }
        Err(err) => format!("({} unreadable: {err})", path.display()),
    }
}

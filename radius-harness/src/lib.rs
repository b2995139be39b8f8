//! A real FreeRADIUS for DotMac's network tests and examples (not published).
//!
//! [`FreeRadius::start`] copies Debian's configuration (`/etc/freeradius/3.0`, from the
//! `freeradius`, `freeradius-postgresql` and `freeradius-utils` packages) into a directory of
//! its own and changes only what a test needs:
//!
//! - `radiusd.conf`: the directory itself as `raddbdir`, logs and run files inside it, no
//!   `user`/`group` switch (the copy belongs to whoever runs the test);
//! - `mods-enabled/sql`: `rlm_sql` with `dialect = "postgresql"`, `driver = "rlm_sql_${dialect}"`,
//!   pointed at the caller's database (whose FreeRADIUS schema [`prepare_database`] loads from
//!   `mods-config/sql/main/postgresql/schema.sql`); the default site's `-sql` lines then use it
//!   in `authorize`, `accounting` and `post-auth`;
//! - `sites-enabled/default`: Debian's `sites-available/default` with its four `listen`
//!   sections replaced by two on 127.0.0.1 at ports of this server's own (authentication and
//!   accounting), `inner-tunnel` removed and, with it, the `eap` module (its tunnelled methods
//!   name that server);
//! - `sites-enabled/coa`: a CoA listener (RFC 5176) on a third port, answering CoA-Request and
//!   Disconnect-Request with an ACK, as Debian's `sites-available/coa` does;
//! - `clients.conf`: one client, 127.0.0.1, with the caller's secret.
//!
//! The server runs as `freeradius -X -d DIR` in the foreground, a child process of the caller,
//! killed when the handle drops. [`FreeRadius::start`] returns only once the server printed
//! `Ready to process requests`; a server that exits or does not get ready is an error with its
//! log, never a silent skip. [`FreeRadius::authenticate`] and [`FreeRadius::account`] play the
//! NAS with `radclient`; [`FreeRadius::radtest`] with `radtest`.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sqlx::Connection as _;

/// Where Debian's packages put the configuration.
pub const DEBIAN_RADDB: &str = "/etc/freeradius/3.0";
/// The server binary of Debian's `freeradius` package.
pub const FREERADIUS_BIN: &str = "/usr/sbin/freeradius";

/// What went wrong starting or talking to FreeRADIUS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// FreeRADIUS (or `radclient`) is not installed.
    #[error(
        "{what} is not installed: apt-get install -y freeradius freeradius-postgresql freeradius-utils"
    )]
    NotInstalled {
        /// The missing program or file.
        what: String,
    },
    /// A file of the copied configuration could not be read or written.
    #[error("FreeRADIUS configuration at {path}: {source}")]
    Config {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The configuration did not have the shape this harness edits.
    #[error("FreeRADIUS configuration: {0}")]
    Shape(String),
    /// The server exited or did not get ready; its log says why.
    #[error("FreeRADIUS did not start ({reason}); its log:\n{log}")]
    NotReady {
        /// Why the wait ended.
        reason: String,
        /// What the server printed.
        log: String,
    },
    /// A program could not be run.
    #[error("running {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// `radclient` gave no answer the harness could read.
    #[error("radclient: {0}")]
    Client(String),
    /// The database could not be prepared.
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
    /// A database URL the harness cannot read.
    #[error("not a postgres:// URL: {0}")]
    Url(String),
}

/// A PostgreSQL database, as FreeRADIUS's `rlm_sql` is told of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTarget {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Login.
    pub user: String,
    /// Password (empty for trust authentication).
    pub password: String,
    /// Database name.
    pub dbname: String,
}

impl PgTarget {
    /// Reads `postgres://user[:password]@host[:port]/dbname` (a query string is ignored).
    ///
    /// # Errors
    ///
    /// [`HarnessError::Url`] for anything else.
    pub fn from_url(url: &str) -> Result<PgTarget, HarnessError> {
        let bad = || HarnessError::Url(url.to_owned());
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or_else(bad)?;
        let rest = rest.split('?').next().unwrap_or(rest);
        let (auth, hostpart) = rest.rsplit_once('@').ok_or_else(bad)?;
        let (user, password) = auth.split_once(':').unwrap_or((auth, ""));
        let (hostport, dbname) = hostpart.split_once('/').ok_or_else(bad)?;
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad())?),
            None => (hostport, 5432),
        };
        if user.is_empty() || host.is_empty() || dbname.is_empty() {
            return Err(bad());
        }
        Ok(PgTarget {
            host: host.to_owned(),
            port,
            user: user.to_owned(),
            password: password.to_owned(),
            dbname: dbname.to_owned(),
        })
    }

    /// This target as a URL.
    pub fn url(&self) -> String {
        let auth = if self.password.is_empty() {
            self.user.clone()
        } else {
            format!("{}:{}", self.user, self.password)
        };
        format!(
            "postgres://{auth}@{}:{}/{}",
            self.host, self.port, self.dbname
        )
    }

    /// The same server, another database.
    pub fn with_dbname(&self, dbname: &str) -> PgTarget {
        PgTarget {
            dbname: dbname.to_owned(),
            ..self.clone()
        }
    }
}

/// Creates the database `dbname` on the server of `admin_url` when it does not exist and loads
/// FreeRADIUS's PostgreSQL schema into it once (concurrent callers wait for one another).
///
/// # Errors
///
/// [`HarnessError::NotInstalled`] without the schema file, [`HarnessError::Database`] when the
/// server refuses, [`HarnessError::Url`] for a URL that is not `postgres://…`.
pub async fn prepare_database(admin_url: &str, dbname: &str) -> Result<PgTarget, HarnessError> {
    let admin = PgTarget::from_url(admin_url)?;
    if !dbname
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(HarnessError::Url(format!("database name {dbname:?}")));
    }
    let schema_path = Path::new(DEBIAN_RADDB).join("mods-config/sql/main/postgresql/schema.sql");
    let schema = fs::read_to_string(&schema_path).map_err(|_| HarnessError::NotInstalled {
        what: schema_path.display().to_string(),
    })?;
    let mut conn = sqlx::PgConnection::connect(&admin.url()).await?;
    let created = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{dbname}\"")))
        .execute(&mut conn)
        .await;
    if let Err(e) = created {
        // Already there (42P04), or created by a concurrent caller a moment ago (23505).
        let known = e
            .as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|c| c == "42P04" || c == "23505");
        if !known {
            return Err(e.into());
        }
    }
    conn.close().await?;
    let target = admin.with_dbname(dbname);
    let mut conn = sqlx::PgConnection::connect(&target.url()).await?;
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(1812)")
        .execute(&mut *tx)
        .await?;
    let present: Option<String> = sqlx::query_scalar("SELECT to_regclass('public.radcheck')::text")
        .fetch_one(&mut *tx)
        .await?;
    if present.is_none() {
        sqlx::raw_sql(sqlx::AssertSqlSafe(schema))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    conn.close().await?;
    Ok(target)
}

/// How to start the server.
#[derive(Debug, Clone)]
pub struct FreeRadiusSettings {
    /// The database `rlm_sql` uses (FreeRADIUS's schema loaded, see [`prepare_database`]).
    pub database: PgTarget,
    /// The shared secret of the one client, 127.0.0.1.
    pub secret: String,
    /// How long to wait for `Ready to process requests`.
    pub ready_timeout: Duration,
}

impl FreeRadiusSettings {
    /// Settings over `database` with the secret `testing123` and a 30-second start.
    pub fn new(database: PgTarget) -> Self {
        FreeRadiusSettings {
            database,
            secret: "testing123".to_owned(),
            ready_timeout: Duration::from_secs(30),
        }
    }
}

/// The answer to a request, as `radclient` printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RadiusReply {
    /// The packet type: `Access-Accept`, `Access-Reject`, `Accounting-Response`, ….
    pub code: String,
    /// The reply's attributes in order, values without quotes.
    pub attributes: Vec<(String, String)>,
}

impl RadiusReply {
    /// The first value of `name`.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the server accepted an Access-Request.
    pub fn accepted(&self) -> bool {
        self.code == "Access-Accept"
    }
}

/// A running FreeRADIUS, killed (and its directory removed) on drop.
#[derive(Debug)]
pub struct FreeRadius {
    child: Child,
    dir: PathBuf,
    auth_port: u16,
    acct_port: u16,
    coa_port: u16,
    secret: String,
}

static STARTS: AtomicU32 = AtomicU32::new(0);

fn config_error(path: &Path) -> impl FnOnce(io::Error) -> HarnessError + '_ {
    move |source| HarnessError::Config {
        path: path.to_owned(),
        source,
    }
}

/// Copies a directory tree, keeping symbolic links as links.
fn copy_tree(from: &Path, to: &Path) -> Result<(), HarnessError> {
    fs::create_dir_all(to).map_err(config_error(to))?;
    for entry in fs::read_dir(from).map_err(config_error(from))? {
        let entry = entry.map_err(config_error(from))?;
        let path = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().map_err(config_error(&path))?;
        if kind.is_symlink() {
            let link = fs::read_link(&path).map_err(config_error(&path))?;
            std::os::unix::fs::symlink(&link, &target).map_err(config_error(&target))?;
        } else if kind.is_dir() {
            copy_tree(&path, &target)?;
        } else {
            fs::copy(&path, &target).map_err(config_error(&path))?;
        }
    }
    Ok(())
}

/// Three free UDP ports on loopback (bound, read, released).
fn free_ports() -> Result<[u16; 3], HarnessError> {
    let bind = || {
        UdpSocket::bind("127.0.0.1:0").map_err(|source| HarnessError::Spawn {
            program: "bind 127.0.0.1:0".to_owned(),
            source,
        })
    };
    let sockets = [bind()?, bind()?, bind()?];
    let mut ports = [0u16; 3];
    for (port, socket) in ports.iter_mut().zip(&sockets) {
        *port = socket
            .local_addr()
            .map_err(|source| HarnessError::Spawn {
                program: "local_addr".to_owned(),
                source,
            })?
            .port();
    }
    Ok(ports)
}

/// A line without its comment (`#` outside quotes).
fn without_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

fn brace_delta(line: &str) -> i32 {
    let code = without_comment(line);
    let open = code.matches('{').count();
    let close = code.matches('}').count();
    i32::try_from(open).unwrap_or(i32::MAX) - i32::try_from(close).unwrap_or(i32::MAX)
}

/// Debian's default site with its `listen` sections replaced by `listens` and every use of
/// the `eap` module taken out.
fn edit_default_site(text: &str, listens: &str) -> Result<String, HarnessError> {
    let mut out = String::with_capacity(text.len());
    let mut depth = 0i32;
    let mut skip_until: Option<i32> = None;
    let mut inserted = false;
    for line in text.lines() {
        let code = without_comment(line).trim();
        let delta = brace_delta(line);
        if let Some(level) = skip_until {
            depth += delta;
            if depth <= level {
                skip_until = None;
            }
            continue;
        }
        // A `listen { … }` of the server, or an `eap { … }` block: skipped whole.
        if (code.starts_with("listen") || code.starts_with("eap")) && code.ends_with('{') {
            if code.starts_with("listen") && !inserted {
                out.push_str(listens);
                inserted = true;
            }
            skip_until = Some(depth);
            depth += delta;
            continue;
        }
        depth += delta;
        if code == "eap" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !inserted || skip_until.is_some() {
        return Err(HarnessError::Shape(
            "sites-available/default has no listen section to replace".to_owned(),
        ));
    }
    Ok(out)
}

fn sql_module(db: &PgTarget) -> String {
    let mut s = String::new();
    // `radius_db` carries the whole connection string so that no libpq default applies.
    let _ = write!(
        s,
        r#"# Written by dotmac-radius-harness: rlm_sql on PostgreSQL.
sql {{
	dialect = "postgresql"
	driver = "rlm_sql_${{dialect}}"
	server = "{host}"
	port = {port}
	login = "{user}"
	password = "{password}"
	radius_db = "dbname={dbname} host={host} port={port} user={user}{pw}"
	postgresql {{
		send_application_name = yes
	}}
	acct_table1 = "radacct"
	acct_table2 = "radacct"
	postauth_table = "radpostauth"
	authcheck_table = "radcheck"
	groupcheck_table = "radgroupcheck"
	authreply_table = "radreply"
	groupreply_table = "radgroupreply"
	usergroup_table = "radusergroup"
	delete_stale_sessions = yes
	pool {{
		start = 1
		min = 1
		max = 4
		spare = 1
		uses = 0
		retry_delay = 1
		lifetime = 0
		idle_timeout = 60
	}}
	read_clients = no
	client_table = "nas"
	group_attribute = "SQL-Group"
	$INCLUDE ${{modconfdir}}/${{.:name}}/main/${{dialect}}/queries.conf
}}
"#,
        host = db.host,
        port = db.port,
        user = db.user,
        password = db.password,
        dbname = db.dbname,
        pw = if db.password.is_empty() {
            String::new()
        } else {
            format!(" password={}", db.password)
        },
    );
    s
}

fn edit_radiusd_conf(text: &str, dir: &Path) -> String {
    let dir = dir.display();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let code = without_comment(line).trim();
        let key = code.split('=').next().unwrap_or("").trim();
        match key {
            "raddbdir" => {
                let _ = writeln!(out, "raddbdir = {dir}");
            }
            "logdir" => {
                let _ = writeln!(out, "logdir = {dir}/log");
            }
            "run_dir" => {
                let _ = writeln!(out, "run_dir = {dir}/run");
            }
            // Stay the user who started the test: the copy is theirs.
            "user" | "group" if code.contains('=') => {}
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

impl FreeRadius {
    /// Configures and starts a server; returns once it is ready.
    ///
    /// # Errors
    ///
    /// [`HarnessError::NotInstalled`] without the packages, [`HarnessError::Config`] /
    /// [`HarnessError::Shape`] when the configuration cannot be written,
    /// [`HarnessError::NotReady`] (with the server's log) when it exits or does not get
    /// ready in time.
    pub fn start(settings: &FreeRadiusSettings) -> Result<FreeRadius, HarnessError> {
        for what in [FREERADIUS_BIN, DEBIAN_RADDB, "/usr/bin/radclient"] {
            if !Path::new(what).exists() {
                return Err(HarnessError::NotInstalled {
                    what: what.to_owned(),
                });
            }
        }
        let n = STARTS.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("dotmac-freeradius-{}-{n}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(config_error(&dir))?;
        }
        copy_tree(Path::new(DEBIAN_RADDB), &dir)?;
        for sub in ["log", "log/radacct", "run"] {
            fs::create_dir_all(dir.join(sub)).map_err(config_error(&dir))?;
        }
        let [auth_port, acct_port, coa_port] = free_ports()?;

        let conf = dir.join("radiusd.conf");
        let text = fs::read_to_string(&conf).map_err(config_error(&conf))?;
        fs::write(&conf, edit_radiusd_conf(&text, &dir)).map_err(config_error(&conf))?;

        for name in [
            "sites-enabled/inner-tunnel",
            "mods-enabled/eap",
            "sites-enabled/default",
        ] {
            let path = dir.join(name);
            if path.symlink_metadata().is_ok() {
                fs::remove_file(&path).map_err(config_error(&path))?;
            }
        }
        let default = dir.join("sites-available/default");
        let text = fs::read_to_string(&default).map_err(config_error(&default))?;
        let listens = format!(
            "listen {{\n\ttype = auth\n\tipaddr = 127.0.0.1\n\tport = {auth_port}\n}}\n\
             listen {{\n\ttype = acct\n\tipaddr = 127.0.0.1\n\tport = {acct_port}\n}}\n"
        );
        let site = dir.join("sites-enabled/default");
        fs::write(&site, edit_default_site(&text, &listens)?).map_err(config_error(&site))?;

        let coa = dir.join("sites-enabled/coa");
        let coa_site = format!(
            "# Written by dotmac-radius-harness: a CoA listener (RFC 5176), as sites-available/coa.\n\
             listen {{\n\ttype = coa\n\tipaddr = 127.0.0.1\n\tport = {coa_port}\n\tvirtual_server = coa\n}}\n\
             server coa {{\n\trecv-coa {{\n\t\tok\n\t}}\n\tsend-coa {{\n\t\tok\n\t}}\n}}\n"
        );
        fs::write(&coa, coa_site).map_err(config_error(&coa))?;

        let sql = dir.join("mods-enabled/sql");
        fs::write(&sql, sql_module(&settings.database)).map_err(config_error(&sql))?;

        let clients = dir.join("clients.conf");
        let client = format!(
            "# Written by dotmac-radius-harness: the test's NAS.\n\
             client localhost {{\n\tipaddr = 127.0.0.1\n\tproto = *\n\tsecret = {}\n\
             \trequire_message_authenticator = no\n\tnas_type = other\n}}\n",
            settings.secret
        );
        fs::write(&clients, client).map_err(config_error(&clients))?;

        let log_path = dir.join("log/server.log");
        let log = fs::File::create(&log_path).map_err(config_error(&log_path))?;
        let err = log.try_clone().map_err(config_error(&log_path))?;
        let child = Command::new(FREERADIUS_BIN)
            .arg("-X")
            .arg("-d")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|source| HarnessError::Spawn {
                program: FREERADIUS_BIN.to_owned(),
                source,
            })?;
        let mut server = FreeRadius {
            child,
            dir,
            auth_port,
            acct_port,
            coa_port,
            secret: settings.secret.clone(),
        };
        server.wait_ready(settings.ready_timeout)?;
        Ok(server)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), HarnessError> {
        let started = Instant::now();
        loop {
            let log = self.log();
            if log.contains("Ready to process requests") {
                return Ok(());
            }
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    return Err(HarnessError::NotReady {
                        reason: format!("it exited with {status}"),
                        log: self.log(),
                    });
                }
                Ok(None) => {}
                Err(source) => {
                    return Err(HarnessError::Spawn {
                        program: FREERADIUS_BIN.to_owned(),
                        source,
                    });
                }
            }
            if started.elapsed() > timeout {
                return Err(HarnessError::NotReady {
                    reason: format!("not ready after {timeout:?}"),
                    log,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the server printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("log/server.log")).unwrap_or_default()
    }

    /// The authentication port on 127.0.0.1.
    pub fn auth_port(&self) -> u16 {
        self.auth_port
    }

    /// The accounting port on 127.0.0.1.
    pub fn acct_port(&self) -> u16 {
        self.acct_port
    }

    /// The CoA / Disconnect port (RFC 5176) on 127.0.0.1.
    pub fn coa_port(&self) -> u16 {
        self.coa_port
    }

    /// The shared secret of 127.0.0.1.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The configuration directory (kept until the server drops).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sends `attributes` (`Name = value` pairs) with `radclient` as `kind` (`auth`, `acct`,
    /// `coa`, `disconnect`) to `port`, and reads the answer.
    ///
    /// # Errors
    ///
    /// [`HarnessError::Spawn`] when `radclient` cannot run, [`HarnessError::Client`] when it
    /// got no answer.
    pub fn send(
        &self,
        kind: &str,
        port: u16,
        attributes: &[(&str, String)],
    ) -> Result<RadiusReply, HarnessError> {
        let mut input = String::new();
        for (name, value) in attributes {
            let _ = writeln!(input, "{name} = {value}");
        }
        let mut child = Command::new("radclient")
            .args(["-x", "-r", "2", "-t", "3"])
            .arg(format!("127.0.0.1:{port}"))
            .arg(kind)
            .arg(&self.secret)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| HarnessError::Spawn {
                program: "radclient".to_owned(),
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write as _;
            stdin
                .write_all(input.as_bytes())
                .map_err(|source| HarnessError::Spawn {
                    program: "radclient".to_owned(),
                    source,
                })?;
        }
        let output = child
            .wait_with_output()
            .map_err(|source| HarnessError::Spawn {
                program: "radclient".to_owned(),
                source,
            })?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        parse_reply(&stdout).ok_or_else(|| {
            HarnessError::Client(format!(
                "no answer; stdout: {stdout} stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            ))
        })
    }

    /// An Access-Request with a PAP password, as a NAS sends it.
    ///
    /// # Errors
    ///
    /// As [`FreeRadius::send`].
    pub fn authenticate(&self, user: &str, password: &str) -> Result<RadiusReply, HarnessError> {
        self.send(
            "auth",
            self.auth_port,
            &[
                ("User-Name", quote(user)),
                ("User-Password", quote(password)),
                ("NAS-IP-Address", "127.0.0.1".to_owned()),
            ],
        )
    }

    /// An Accounting-Request (`Acct-Status-Type` and the rest in `attributes`).
    ///
    /// # Errors
    ///
    /// As [`FreeRadius::send`].
    pub fn account(&self, attributes: &[(&str, String)]) -> Result<RadiusReply, HarnessError> {
        self.send("acct", self.acct_port, attributes)
    }

    /// `radtest USER PASS 127.0.0.1:PORT 0 SECRET`: whether the answer was an Access-Accept,
    /// and what radtest printed.
    ///
    /// # Errors
    ///
    /// [`HarnessError::Spawn`] when `radtest` cannot run.
    pub fn radtest(&self, user: &str, password: &str) -> Result<(bool, String), HarnessError> {
        let output = Command::new("radtest")
            .arg(user)
            .arg(password)
            .arg(format!("127.0.0.1:{}", self.auth_port))
            .arg("0")
            .arg(&self.secret)
            .output()
            .map_err(|source| HarnessError::Spawn {
                program: "radtest".to_owned(),
                source,
            })?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        Ok((text.contains("Received Access-Accept"), text))
    }
}

impl Drop for FreeRadius {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A value in double quotes for `radclient`'s input.
pub fn quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The last answer in `radclient -x` output: `Received Access-Accept Id 7 from … length 40`
/// followed by tab-indented `Name = value` lines.
fn parse_reply(stdout: &str) -> Option<RadiusReply> {
    let mut reply: Option<RadiusReply> = None;
    let mut in_reply = false;
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("Received ") {
            let code = rest.split_whitespace().next()?.to_owned();
            reply = Some(RadiusReply {
                code,
                attributes: Vec::new(),
            });
            in_reply = true;
            continue;
        }
        if line.starts_with("Sent ") {
            in_reply = false;
            continue;
        }
        if in_reply && line.starts_with(['\t', ' ']) {
            if let (Some(r), Some((name, value))) = (reply.as_mut(), line.trim().split_once(" = "))
            {
                r.attributes.push((
                    name.trim().to_owned(),
                    value.trim().trim_matches('"').to_owned(),
                ));
            }
        } else if in_reply && !line.trim().is_empty() {
            in_reply = false;
        }
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_url_is_read_into_its_parts() {
        let t = PgTarget::from_url("postgres://postgres@127.0.0.1:5432/test_x").unwrap();
        assert_eq!(t.host, "127.0.0.1");
        assert_eq!(t.port, 5432);
        assert_eq!(t.user, "postgres");
        assert_eq!(t.dbname, "test_x");
        assert_eq!(t.url(), "postgres://postgres@127.0.0.1:5432/test_x");
        assert!(matches!(
            PgTarget::from_url("mysql://x@y/z"),
            Err(HarnessError::Url(_))
        ));
    }

    #[test]
    fn the_default_site_loses_its_listen_sections_and_eap() {
        let site = "server default {\nlisten {\n\ttype = auth\n\tlimit {\n\t}\n}\nlisten {\n\ttype = acct\n}\nauthorize {\n\teap {\n\t\tok = return\n\t}\n\t-sql\n}\nauthenticate {\n\teap\n}\n}\n";
        let out = edit_default_site(site, "LISTENS\n").unwrap();
        assert_eq!(
            out,
            "server default {\nLISTENS\nauthorize {\n\t-sql\n}\nauthenticate {\n}\n}\n"
        );
    }

    #[test]
    fn radclient_output_is_read() {
        let out = "Sent Access-Request Id 12 from 0.0.0.0:1 to 127.0.0.1:18120 length 40\n\tUser-Name = \"a\"\nReceived Access-Accept Id 12 from 127.0.0.1:18120 to 127.0.0.1:1 length 40\n\tMikrotik-Rate-Limit = \"10M/2M\"\n\tFramed-IP-Address = 10.0.0.2\n";
        let reply = parse_reply(out).unwrap();
        assert!(reply.accepted());
        assert_eq!(reply.attribute("Mikrotik-Rate-Limit"), Some("10M/2M"));
        assert_eq!(reply.attribute("Framed-IP-Address"), Some("10.0.0.2"));
        assert_eq!(reply.attribute("User-Name"), None);
    }
}

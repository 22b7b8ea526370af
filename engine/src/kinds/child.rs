//! Running a command for a task: its stdout and stderr go through one pipe that this thread
//! copies into the task's log — created only when the command writes something, so a quiet
//! task leaves no log file — and its exit is awaited on a pidfd (poll, no sleeping), with a
//! check for cancellation and the timeout every 50 ms.
//!
//! [`spawn`] starts the command with `clone(CLONE_VM | CLONE_VFORK)` (what `posix_spawn` does)
//! rather than `fork`: the engine's page tables are not copied for every task (with a fork,
//! copying them and the copy-on-write faults after it were a sixth of a 1,000-task shell run's
//! CPU). The child still becomes a session leader and gets `PR_SET_PDEATHSIG`, which
//! `posix_spawn` cannot do.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A process this module waits for: a [`std::process::Child`] or a [`Spawned`] one.
pub trait Proc {
    fn id(&self) -> u32;
    fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>>;
    fn wait(&mut self) -> std::io::Result<ExitStatus>;
}

impl Proc for Child {
    fn id(&self) -> u32 {
        Child::id(self)
    }
    fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        Child::try_wait(self)
    }
    fn wait(&mut self) -> std::io::Result<ExitStatus> {
        Child::wait(self)
    }
}

/// A child started by [`spawn`].
pub struct Spawned {
    pid: libc::pid_t,
    status: Option<ExitStatus>,
}

impl Spawned {
    fn reap(&mut self, flags: libc::c_int) -> std::io::Result<Option<ExitStatus>> {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(st) = self.status {
            return Ok(Some(st));
        }
        let mut raw = 0;
        loop {
            // SAFETY: waiting for our own child.
            let r = unsafe { libc::waitpid(self.pid, &mut raw, flags) };
            if r == self.pid {
                let st = ExitStatus::from_raw(raw);
                self.status = Some(st);
                return Ok(Some(st));
            }
            if r == 0 {
                return Ok(None);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Proc for Spawned {
    fn id(&self) -> u32 {
        self.pid as u32
    }
    fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.reap(libc::WNOHANG)
    }
    fn wait(&mut self) -> std::io::Result<ExitStatus> {
        Ok(self.reap(0)?.expect("a blocking wait returns a status"))
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // Never leave a zombie: the caller waited, or the process is ended here.
        if self.status.is_none() && self.try_wait().ok().flatten().is_none() {
            // SAFETY: signalling and reaping our own child.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let _ = self.wait();
        }
    }
}

/// What the child needs, prepared before the clone (the child may not allocate).
struct ChildArgs {
    prog: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdin: libc::c_int,
    out: libc::c_int,
    err: libc::c_int,
    report: libc::c_int,
    reset: *const [libc::c_int; 64],
    n_reset: usize,
}

/// Runs in the child, on its own stack, sharing the parent's memory until `execve`: only
/// async-signal-safe system calls, no allocation.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points at the parent's ChildArgs, alive while the parent is suspended
    // (CLONE_VFORK); every call below is async-signal-safe.
    unsafe {
        let a = &*(arg as *const ChildArgs);
        let fail = |fd: libc::c_int| -> ! {
            let e: libc::c_int = *libc::__errno_location();
            libc::write(fd, &e as *const libc::c_int as *const libc::c_void, 4);
            libc::_exit(127)
        };
        // Handlers the engine installed would run in this copy of its memory: default them
        // (found by the parent; ignored signals stay ignored except SIGPIPE, as
        // `std::process` does).
        for &sig in (&*a.reset)[..a.n_reset].iter() {
            libc::signal(sig, libc::SIG_DFL);
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::setsid();
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::chdir(a.cwd) != 0 {
            fail(a.report);
        }
        // (every source descriptor is >= 3, so no dup2 below overwrites another's source)
        if libc::dup2(a.stdin, 0) < 0 || libc::dup2(a.out, 1) < 0 || libc::dup2(a.err, 2) < 0 {
            fail(a.report);
        }
        libc::execve(a.prog, a.argv, a.envp);
        fail(a.report)
    }
}

fn cstring(what: &str, b: &[u8]) -> std::io::Result<std::ffi::CString> {
    std::ffi::CString::new(b).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

/// Starts `prog` with `args` (argv[1..]) and exactly `env`, in `cwd`, stdin from /dev/null,
/// stdout and stderr to `out`, as the leader of a new session that dies with this thread
/// (`PR_SET_PDEATHSIG`, as a fork-and-exec would). An `execve` failure is this call's error.
pub fn spawn(
    prog: &Path,
    args: &[&std::ffi::OsStr],
    env: &std::collections::BTreeMap<std::ffi::OsString, std::ffi::OsString>,
    cwd: &Path,
    out: &OwnedFd,
) -> std::io::Result<Spawned> {
    spawn_io(prog, args, env, cwd, None, out, out)
}

/// [`spawn`] with stdin from `stdin` (else /dev/null) and stderr to `err`.
pub fn spawn_io(
    prog: &Path,
    args: &[&std::ffi::OsStr],
    env: &std::collections::BTreeMap<std::ffi::OsString, std::ffi::OsString>,
    cwd: &Path,
    stdin: Option<&OwnedFd>,
    out: &OwnedFd,
    err: &OwnedFd,
) -> std::io::Result<Spawned> {
    use std::os::unix::ffi::OsStrExt as _;
    let prog_c = cstring("the program", prog.as_os_str().as_bytes())?;
    let mut argv_c = vec![prog_c.clone()];
    for a in args {
        argv_c.push(cstring("an argument", a.as_bytes())?);
    }
    let mut env_c = Vec::with_capacity(env.len());
    for (k, v) in env {
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        env_c.push(cstring("an environment variable", &kv)?);
    }
    let cwd_c = cstring("the directory", cwd.as_os_str().as_bytes())?;
    let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env_c.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());
    // The signals whose handling the child must reset (a handler, or SIGPIPE ignored).
    let mut reset = [0 as libc::c_int; 64];
    let mut n_reset = 0;
    for sig in 1..libc::SIGRTMAX().min(64) {
        // SAFETY: querying a disposition into a zeroed sigaction.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        if unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } == 0
            && old.sa_sigaction != libc::SIG_DFL
            && (old.sa_sigaction != libc::SIG_IGN || sig == libc::SIGPIPE)
        {
            reset[n_reset] = sig;
            n_reset += 1;
        }
    }
    // The child's stdin, stdout and stderr come from descriptors >= 3: a new pipe numbered
    // 0–2 (a host process started with a standard stream closed; Rust's own start-up reopens
    // them on /dev/null, so not ours) would be overwritten by another dup2, or keep its
    // close-on-exec flag when duplicated onto itself.
    let null = match stdin {
        Some(_) => None,
        None => Some(OwnedFd::from(File::open("/dev/null")?)),
    };
    let stdin = stdin.or(null.as_ref()).expect("stdin or /dev/null");
    let (stdin, _keep_in) = above_std(stdin)?;
    let (out, _keep_out) = above_std(out)?;
    let (err, _keep_err) = above_std(err)?;
    let (report_rd, report_wr) = pipe()?;
    let args = ChildArgs {
        prog: prog_c.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: cwd_c.as_ptr(),
        stdin,
        out,
        err,
        report: report_wr.as_raw_fd(),
        reset: &reset,
        n_reset,
    };
    // The child's stack: one per thread, reused (this thread is suspended while the child
    // runs on it); it grows down from its 16-byte aligned end.
    thread_local! {
        static STACK: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let top = STACK.with(|s| {
        let mut s = s.borrow_mut();
        if s.is_empty() {
            *s = vec![0u8; 64 << 10];
        }
        ((s.as_mut_ptr() as usize + s.len()) & !15) as *mut libc::c_void
    });
    // No signal handler may run in the child before it resets them: block all around clone.
    // SAFETY: the masks are valid sigsets; clone runs child_main on `stack` with `args`, both
    // alive until it returns (CLONE_VFORK suspends this thread until execve or _exit).
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &args as *const ChildArgs as *mut libc::c_void,
        );
        let e = std::io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(e);
        }
        pid
    };
    drop(report_wr);
    let mut child = Spawned { pid, status: None };
    let mut errno = [0u8; 4];
    let mut f = File::from(report_rd);
    let n = loop {
        match f.read(&mut errno) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    if n == 4 {
        let _ = child.wait();
        return Err(std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno)));
    }
    Ok(child)
}

/// One pipe for a command's stdout and stderr: (read end, write end), both close-on-exec.
pub fn output_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    pipe()
}

/// How a wait ended.
pub enum Ended {
    Exited(ExitStatus),
    /// Cancelled or timed out: the process group was stopped.
    Stopped {
        timed_out: bool,
    },
}

/// `fd`, or a close-on-exec copy of it numbered 3 or more when it is a standard stream's
/// number (the copy is returned to be kept open until the child has started).
fn above_std(fd: &OwnedFd) -> std::io::Result<(RawFd, Option<OwnedFd>)> {
    let raw = fd.as_raw_fd();
    if raw > 2 {
        return Ok((raw, None));
    }
    // SAFETY: duplicating a descriptor we hold; the new one is ours.
    let n = unsafe { libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `n` was just created and is owned by nobody else.
    Ok((n, Some(unsafe { OwnedFd::from_raw_fd(n) })))
}

/// A pipe: (read end, write end), both close-on-exec.
pub fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A descriptor that becomes readable when process `pid` (our child) exits.
pub fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a non-negative result is a descriptor we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The lazily created log the command's output is copied into.
pub struct Log<'a> {
    path: &'a Path,
    file: Option<File>,
}

impl<'a> Log<'a> {
    pub fn new(path: &'a Path) -> Log<'a> {
        Log { path, file: None }
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.file.is_none() {
            if let Some(parent) = self.path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            self.file = Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.path)?,
            );
        }
        self.file.as_mut().expect("opened").write_all(bytes)
    }
}

/// Sets the command's stdout and stderr to one pipe; returns its read end.
pub fn capture(cmd: &mut Command) -> std::io::Result<OwnedFd> {
    let (rd, wr) = pipe()?;
    let wr2 = wr.try_clone()?;
    cmd.stdout(Stdio::from(wr)).stderr(Stdio::from(wr2));
    Ok(rd)
}

/// Copies what is in the pipe now into the log; `false` once the pipe is closed.
fn drain(rd: &mut File, log: &mut Log, buf: &mut [u8]) -> std::io::Result<bool> {
    loop {
        match rd.read(buf) {
            Ok(0) => return Ok(false),
            Ok(n) => log.write(&buf[..n])?,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Waits for `child` (the leader of its own process group) while copying its output from
/// `rd` into `log`; stops the group when `stop()` says so or after `timeout`. Output still
/// buffered when the command exits is copied; a background process that keeps the pipe open
/// is not waited for.
pub fn wait(
    child: &mut dyn Proc,
    rd: OwnedFd,
    log: &mut Log,
    timeout: Option<Duration>,
    stop: &dyn Fn() -> bool,
) -> std::io::Result<Ended> {
    // SAFETY: F_SETFL on a descriptor we own.
    unsafe {
        let fl = libc::fcntl(rd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(rd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    let mut rd = File::from(rd);
    let pidfd = pidfd_open(child.id());
    let started = Instant::now();
    let mut buf = vec![0u8; 64 << 10];
    let mut open = true;
    let mut backoff = Duration::from_micros(200);
    loop {
        let mut fds = Vec::with_capacity(2);
        if open {
            fds.push(libc::pollfd {
                fd: rd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if let Some(p) = &pidfd {
            fds.push(libc::pollfd {
                fd: p.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // With a pidfd the exit wakes the poll; without, poll the exit with a backoff.
        let ms = if pidfd.is_some() {
            50
        } else {
            let ms = backoff.as_millis().max(1) as i32;
            backoff = (backoff * 2).min(Duration::from_millis(20));
            ms
        };
        // SAFETY: fds is a valid array of pollfd for the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        if open {
            open = drain(&mut rd, log, &mut buf)?;
        }
        if let Some(st) = child.try_wait()? {
            if open {
                drain(&mut rd, log, &mut buf)?;
            }
            return Ok(Ended::Exited(st));
        }
        let timed_out = timeout.is_some_and(|t| started.elapsed() > t);
        if stop() || timed_out {
            let pgid = child.id() as i32;
            // SAFETY: signalling the child's own process group.
            unsafe { libc::kill(-pgid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(2);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                if open {
                    open = drain(&mut rd, log, &mut buf)?;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            // SAFETY: as above.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = child.wait();
            if open {
                drain(&mut rd, log, &mut buf)?;
            }
            return Ok(Ended::Stopped { timed_out });
        }
    }
}

/// `/bin/sh` when it exists (no search of `PATH` per task), else `sh`.
pub fn sh() -> &'static str {
    static SH: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    SH.get_or_init(|| {
        if Path::new("/bin/sh").exists() {
            "/bin/sh"
        } else {
            "sh"
        }
    })
}

#[cfg(test)]
mod spawn_tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::ffi::{OsStr, OsString};

    fn run(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> (Spawned, String) {
        let (rd, wr) = output_pipe().unwrap();
        let env: BTreeMap<OsString, OsString> = env
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect();
        let a: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let mut p = spawn(Path::new("/bin/sh"), &a, &env, cwd, &wr).unwrap();
        drop(wr);
        let mut out = String::new();
        File::from(rd).read_to_string(&mut out).unwrap();
        Proc::wait(&mut p).unwrap();
        (p, out)
    }

    #[test]
    fn spawn_gives_exactly_the_environment_directory_and_arguments() {
        let d = tempfile::tempdir().unwrap();
        let (mut p, out) = run(
            &[
                "-c",
                "echo \"$1|$A|$HOME|$(pwd)\"; echo err >&2; exit 3",
                "x",
                "one two",
            ],
            &[("A", "b c"), ("PATH", "/usr/bin:/bin")],
            d.path(),
        );
        let cwd = d.path().canonicalize().unwrap();
        assert_eq!(out, format!("one two|b c||{}\nerr\n", cwd.display()));
        assert_eq!(p.try_wait().unwrap().unwrap().code(), Some(3));
    }

    #[test]
    fn the_child_leads_its_session_and_has_sigpipe_by_default() {
        let d = tempfile::tempdir().unwrap();
        // A writer into a closed pipe dies of SIGPIPE (status 141 in sh) instead of looping.
        let (mut p, out) = run(
            &[
                "-c",
                "cut -d' ' -f6 /proc/$$/stat; echo $$; (while :; do echo y; done) | head -1 >/dev/null; echo ok",
            ],
            &[("PATH", "/usr/bin:/bin")],
            d.path(),
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert_eq!(lines[0], lines[1], "session id = the shell's pid: {out}");
        assert_eq!(lines[2], "ok");
        assert!(p.try_wait().unwrap().unwrap().success());
    }

    #[test]
    fn an_exec_failure_is_the_spawn_error() {
        let (_, wr) = output_pipe().unwrap();
        let e = spawn(
            Path::new("/nonexistent/sh"),
            &[],
            &BTreeMap::new(),
            Path::new("/"),
            &wr,
        )
        .err()
        .unwrap();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        let e = spawn(
            Path::new("/bin/sh"),
            &[],
            &BTreeMap::new(),
            Path::new("/nonexistent"),
            &wr,
        )
        .err()
        .unwrap();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    }
}

//! Running a command for a task: its stdout and stderr go through one pipe that this thread
//! copies into the task's log — created only when the command writes something, so a quiet
//! task leaves no log file — and its exit is awaited on a pidfd (poll, no sleeping), with a
//! check for cancellation and the timeout every 50 ms.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How a wait ended.
pub enum Ended {
    Exited(ExitStatus),
    /// Cancelled or timed out: the process group was stopped.
    Stopped {
        timed_out: bool,
    },
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
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
    child: &mut Child,
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

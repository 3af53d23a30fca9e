//! The seccomp profile of every container (`linux.seccomp`): refuse every
//! system call (EPERM) but the ones ordinary programs make, as garden-runc's
//! and Docker's default profiles do for unprivileged containers.
//!
//! Left out, among others: mounts and namespaces (`mount`, `umount2`,
//! `pivot_root`, `chroot`, `unshare`, `setns`, and `clone` with any
//! `CLONE_NEW*` flag), the kernel keyring (`keyctl`, `add_key`,
//! `request_key`), tracing other processes (`ptrace`,
//! `process_vm_readv`/`writev`, `kcmp`), `bpf`, `perf_event_open`,
//! `userfaultfd`, `io_uring_*`, kernel modules, `kexec_*`, `reboot`, swap,
//! clocks, `quotactl`, `open_by_handle_at`, `syslog`, NUMA policy and
//! `personality` beyond the harmless values. `clone3` answers ENOSYS, so
//! glibc falls back to `clone`, whose flags can be checked (a BPF filter
//! cannot read clone3's flags behind a pointer).

use serde_json::{Value, json};

/// System calls allowed unconditionally. Names unknown on this
/// architecture (32-bit variants on x86_64, say) are ignored by runc.
#[rustfmt::skip]
const ALLOWED: &[&str] = &[
    "accept", "accept4", "access", "alarm", "arch_prctl", "bind", "brk", "capget", "capset",
    "chdir", "chmod", "chown", "chown32", "clock_getres", "clock_getres_time64",
    "clock_gettime", "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64", "close",
    "close_range", "connect", "copy_file_range", "creat", "dup", "dup2", "dup3",
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_pwait", "epoll_pwait2", "epoll_wait",
    "eventfd", "eventfd2", "execve", "execveat", "exit", "exit_group", "faccessat",
    "faccessat2", "fadvise64", "fadvise64_64", "fallocate", "fchdir", "fchmod", "fchmodat",
    "fchmodat2", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync",
    "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr", "fstat",
    "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate", "ftruncate64",
    "futex", "futex_time64", "futex_waitv", "futimesat", "getcpu", "getcwd", "getdents",
    "getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32",
    "getgroups", "getgroups32", "getitimer", "getpeername", "getpgid", "getpgrp", "getpid",
    "getppid", "getpriority", "getrandom", "getresgid", "getresgid32", "getresuid",
    "getresuid32", "getrlimit", "get_robust_list", "getrusage", "getsid", "getsockname",
    "getsockopt", "get_thread_area", "gettid", "gettimeofday", "getuid", "getuid32",
    "getxattr", "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch",
    "io_cancel", "ioctl", "io_destroy", "io_getevents", "io_pgetevents",
    "io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup", "io_submit", "ipc",
    "kill", "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self",
    "lchown", "lchown32", "lgetxattr", "link", "linkat", "listen", "listxattr", "llistxattr",
    "_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64", "madvise",
    "membarrier", "memfd_create", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock",
    "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr", "mq_notify",
    "mq_open", "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend",
    "mq_timedsend_time64", "mq_unlink", "mremap", "msgctl", "msgget", "msgrcv", "msgsnd",
    "msync", "munlock", "munlockall", "munmap", "nanosleep", "newfstatat", "_newselect",
    "open", "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2",
    "pkey_alloc", "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl",
    "pread64", "preadv", "preadv2", "prlimit64", "process_mrelease", "pselect6",
    "pselect6_time64", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink",
    "readlinkat", "readv", "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg",
    "remap_file_pages", "removexattr", "rename", "renameat", "renameat2", "restart_syscall",
    "rmdir", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo",
    "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr", "sched_getparam",
    "sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler",
    "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity",
    "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp",
    "select", "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "send",
    "sendfile", "sendfile64", "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsgid32",
    "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32", "setitimer",
    "setpgid", "setpriority", "setregid", "setregid32", "setresgid", "setresgid32",
    "setresuid", "setresuid32", "setreuid", "setreuid32", "setrlimit", "set_robust_list",
    "setsid", "setsockopt", "set_thread_area", "set_tid_address", "setuid", "setuid32",
    "setxattr", "shmat", "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd",
    "signalfd4", "sigprocmask", "sigreturn", "socket", "socketcall", "socketpair", "splice",
    "stat", "stat64", "statfs", "statfs64", "statx", "symlink", "symlinkat", "sync",
    "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create",
    "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime",
    "timer_settime64", "timerfd_create", "timerfd_gettime", "timerfd_gettime64",
    "timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate", "truncate64",
    "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "utime", "utimensat",
    "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write",
    "writev",
];

/// `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC |
/// CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET`: `clone` is allowed only
/// with none of them (new threads and processes, no new namespaces).
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// `personality` values that change nothing dangerous: `PER_LINUX`,
/// `UNAME26`, `PER_LINUX32`, `PER_LINUX32 | UNAME26`, and the query.
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

const ENOSYS: u32 = 38;

/// The machine's own ABI only. Docker and Garden also list the 32-bit
/// ABIs (x86, x32), which triples the filter runc compiles at every start
/// (`bench/container-limits.sh`: seccomp went from about 1.6× a bare start
/// to noise); the stack is the host's 64-bit `/usr`, and a system call
/// through another ABI is refused like any call not listed.
fn architectures() -> Value {
    if cfg!(target_arch = "aarch64") {
        json!(["SCMP_ARCH_AARCH64"])
    } else {
        json!(["SCMP_ARCH_X86_64"])
    }
}

/// The OCI `linux.seccomp` object.
pub fn profile() -> Value {
    let mut syscalls = vec![
        json!({"names": ALLOWED, "action": "SCMP_ACT_ALLOW"}),
        json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0,
                         "op": "SCMP_CMP_MASKED_EQ"}]}),
        json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}),
    ];
    for value in PERSONALITIES {
        syscalls.push(json!({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                             "args": [{"index": 0, "value": value, "op": "SCMP_CMP_EQ"}]}));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": architectures(),
        "syscalls": syscalls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rustfmt::skip]
    const REFUSED: &[&str] = &[
        "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "keyctl", "add_key",
        "request_key", "ptrace", "process_vm_readv", "bpf", "perf_event_open", "userfaultfd",
        "init_module", "finit_module", "delete_module", "kexec_load", "reboot", "swapon",
        "settimeofday", "clock_settime", "open_by_handle_at", "io_uring_setup", "syslog",
        "personality", "clone", "clone3",
    ];

    #[test]
    fn refuses_by_default_and_allows_no_privileged_call_outright() {
        let p = profile();
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        let allowed = &p["syscalls"][0]["names"];
        for name in REFUSED {
            assert!(
                !allowed.as_array().unwrap().iter().any(|n| n == name),
                "{name} must not be allowed unconditionally"
            );
        }
        for name in [
            "read",
            "execve",
            "futex",
            "socket",
            "mmap",
            "exit_group",
            "wait4",
        ] {
            assert!(
                allowed.as_array().unwrap().iter().any(|n| n == name),
                "{name}"
            );
        }
        let mut sorted: Vec<&str> = ALLOWED.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ALLOWED.len(), "no duplicates");
    }

    #[test]
    fn clone_is_allowed_only_without_namespace_flags() {
        let p = profile();
        let clone = &p["syscalls"][1];
        assert_eq!(clone["names"], json!(["clone"]));
        assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(clone["args"][0]["valueTwo"], 0);
        // CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP.
        for flag in [
            0x0002_0000u64,
            0x1000_0000,
            0x2000_0000,
            0x4000_0000,
            0x0200_0000,
        ] {
            assert_ne!(CLONE_NAMESPACE_FLAGS & flag, 0, "{flag:#x}");
        }
        assert_eq!(p["syscalls"][2]["errnoRet"], ENOSYS);
    }
}

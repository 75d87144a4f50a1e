/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The one definition of everything that crosses the kernel/user boundary.
 * The eBPF programs include it; the sensor gets the same types through bindgen.
 * Only fixed-width __u* types, so both sides agree on layout on every arch.
 */
#ifndef NETTAP_EVENTS_H
#define NETTAP_EVENTS_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/*
 * Payload bytes carried by one ring-buffer record. A power of two so the
 * verifier can bound copies with a mask; 16 KiB keeps a per-CPU scratch
 * small while a 1 MiB write still costs only 64 records.
 */
#define NT_CHUNK_MAX 16384

/* Upper bound on iovec entries walked per call (Linux's UIO_MAXIOV). */
#define NT_IOV_MAX 1024

/* Ring-buffer record kinds (first field of every record). */
enum nt_event_kind {
	NT_EV_DATA = 1,
	NT_EV_CONN = 2,
	NT_EV_LIB = 3,  /* struct nt_lib_event: a library was mapped */
	NT_EV_EXEC = 4, /* struct nt_lib_event: a program was executed (name: comm) */
	NT_EV_DNS = 5,  /* struct nt_data_event: one DNS message over UDP (conn: the
	                   datagram's endpoints, conn_id 0; seq 0) */
	NT_EV_EXIT = 6, /* struct nt_lib_event: a process ended, its last thread
	                   gone (ino 0, name: comm); what is kept per pid goes */
};

/* DNS bytes kept per datagram (EDNS answers rarely exceed 1232; 4096 is
 * the largest buffer resolvers advertise). */
#define NT_DNS_MAX 4096

/* Which concrete hook produced a record; the sensor maps it to a name. */
enum nt_probe {
	NT_PROBE_UNKNOWN = 0,
	NT_PROBE_SYS_READ,
	NT_PROBE_SYS_WRITE,
	NT_PROBE_SYS_READV,
	NT_PROBE_SYS_WRITEV,
	NT_PROBE_SYS_RECVFROM,
	NT_PROBE_SYS_SENDTO,
	NT_PROBE_SYS_RECVMSG,
	NT_PROBE_SYS_SENDMSG,
	NT_PROBE_SYS_SENDFILE,
	NT_PROBE_SYS_SPLICE,
	NT_PROBE_SYS_CONNECT,
	NT_PROBE_SYS_ACCEPT,
	NT_PROBE_SYS_ACCEPT4,
	NT_PROBE_SOCK_SET_STATE,
	NT_PROBE_KPROBE_TCP_SENDMSG,
	NT_PROBE_KPROBE_TCP_RECVMSG,
	NT_PROBE_UPROBE_SSL_WRITE,
	NT_PROBE_UPROBE_SSL_WRITE_EX,
	NT_PROBE_UPROBE_SSL_READ,
	NT_PROBE_UPROBE_SSL_READ_EX,
	NT_PROBE_UPROBE_SSL_READ_SITE,    /* SSL_read's result from a uprobe on a return site */
	NT_PROBE_UPROBE_SSL_READ_EX_SITE,
	NT_PROBE_SYS_SENDMMSG,
	NT_PROBE_SYS_RECVMMSG,
	NT_PROBE_UPROBE_GO_TLS_WRITE, /* crypto/tls.(*Conn).Write, bytes taken at its return */
	NT_PROBE_UPROBE_GO_TLS_READ,  /* crypto/tls.(*Conn).Read, at its return */
	NT_PROBE_UPROBE_GNUTLS_SEND,  /* gnutls_record_send2 (gnutls_record_send jumps there) */
	NT_PROBE_UPROBE_GNUTLS_RECV,  /* gnutls_record_recv, at its return */
	NT_PROBE_UPROBE_GNUTLS_RECV_SEQ, /* gnutls_record_recv_seq, at its return */
	NT_PROBE_UPROBE_NSS_WRITE,    /* NSS's ssl_Write (the SSL layer's PR_Write), static */
	NT_PROBE_UPROBE_NSS_SEND,     /* NSS's ssl_Send (PR_Send, PR_Writev) */
	NT_PROBE_UPROBE_NSS_READ,     /* NSS's ssl_Read, at its return */
	NT_PROBE_UPROBE_NSS_RECV,     /* NSS's ssl_Recv, at its return */
	NT_PROBE_UPROBE_RUSTLS_WRITE, /* rustls's PlaintextSink::write of a ConnectionCommon */
	NT_PROBE_UPROBE_RUSTLS_READ,  /* rustls's Reader::read, at its return */
	NT_PROBE_UPROBE_BSSL_WRITE,   /* BoringSSL's SSL_write, found without symbols */
	NT_PROBE_UPROBE_BSSL_READ,    /* BoringSSL's SSL_read, at its return */
	NT_PROBE_UPROBE_GO_TLS_WRITE_RECORD, /* (*Conn).Write's call of writeRecordLocked */
	NT_PROBE_UPROBE_GO_TLS_READ_COPY,    /* (*Conn).Read's copy of the decrypted bytes */
	NT_PROBE_UPROBE_SSL_WRITE_INTERNAL,  /* ssl_write_internal, under SSL_write and SSL_write_ex */
	NT_PROBE_UPROBE_SSL_READ_INTERNAL,   /* ssl_read_internal, at its return */
	NT_PROBE_MAX,
};

enum nt_direction {
	NT_DIR_SEND = 0,
	NT_DIR_RECV = 1,
};

enum nt_role {
	NT_ROLE_UNKNOWN = 0,
	NT_ROLE_CLIENT = 1,
	NT_ROLE_SERVER = 2,
};

enum nt_conn_change {
	NT_CONN_OPEN = 1,
	NT_CONN_CLOSE = 2,
	NT_CONN_MIDSTREAM = 3,
	/* A socket with no entry in `conns` reached TCP_CLOSE while the sensor
	 * said its table may be evicting (`conn_pressure`): conn_id 0, the
	 * endpoints and TCP's own byte counts; user space matches it to the
	 * connection it knows by namespace and endpoints, or ignores it. */
	NT_CONN_CLOSE_UNTRACKED = 4,
};

/* Why something was not kept; index into the `drops` per-CPU array. */
enum nt_drop_reason {
	NT_DROP_RINGBUF_FULL_DATA = 0, /* a data chunk could not be reserved */
	NT_DROP_RINGBUF_FULL_EVENT = 1, /* a conn or library event could not be reserved */
	NT_DROP_INFLIGHT_FULL = 2,     /* a call in flight not remembered: kprobe table full, or a thread's TLS call slot not made */
	NT_DROP_READ_FAULT = 3,        /* user memory could not be read (paged out) */
	NT_DROP_TLS_NO_SOCKET = 4,     /* TLS plaintext whose socket was never seen */
	NT_DROP_GO_CONN_NOT_TCP = 5,   /* Go TLS over a net.Conn that is not a *net.TCPConn */
	NT_DROP_CLOSED_IN_CALL = 6,    /* bytes of a call that ended after its socket's close */
	NT_DROP_TLS_UNBOUND = 7,       /* rustls plaintext not tied to its connection for sure */
	NT_DROP_REASON_MAX = 8,
};

/* One endpoint pair; IPv4 is stored as an IPv4-mapped IPv6 address. */
struct nt_conn_ident {
	__u64 conn_id;   /* kernel-assigned, never reused while the sensor runs */
	__u8 laddr[16];
	__u8 raddr[16];
	__u16 lport;     /* host byte order */
	__u16 rport;     /* host byte order */
	__u16 family;    /* AF_INET or AF_INET6 as the socket was created */
	__u8 role;       /* enum nt_role */
	__u8 flags;      /* NT_CONN_F_* */
	__u32 netns;     /* the socket's network namespace (its inode number) */
	__u32 _pad;
};

/* nt_conn_ident.flags */
#define NT_CONN_F_TLS 1 /* the connection carries TLS; payload records hold its plaintext */

/* Common head of every ring-buffer record. */
struct nt_event_header {
	__u32 kind;      /* enum nt_event_kind */
	__u32 probe;     /* enum nt_probe */
	__u64 ts_ns;     /* bpf_ktime_get_boot_ns(); the sensor converts to realtime */
	__u32 pid;       /* tgid */
	__u32 tid;
	__u8 comm[16];   /* the thread-group leader's comm */
	__u64 cgroup;    /* the calling task's cgroup v2 id, which names its pod after it
	                    exited; 0 where the context is not the owner's (closes) */
	struct nt_conn_ident conn;
};

/* A chunk of payload; `len` bytes of `payload` follow the fixed part. */
struct nt_data_event {
	struct nt_event_header hdr;
	__u64 seq;        /* offset of payload[0] in this direction of the connection */
	__u32 len;        /* payload bytes in this record */
	__u32 truncated;  /* bytes of this call after this record that were not captured
	                     (only on the call's last record) */
	__u8 direction;   /* enum nt_direction */
	__u8 _pad[7];
	__u8 payload[NT_CHUNK_MAX];
};

struct nt_conn_event {
	struct nt_event_header hdr;
	__u32 event;      /* enum nt_conn_change */
	__u32 _pad;
	__u64 send_bytes; /* totals seen so far, for close */
	__u64 recv_bytes;
};

/* A process mapped a library the sensor may want to probe (libssl*), or
 * executed a program (which may carry OpenSSL linked in). */
struct nt_lib_event {
	__u32 kind;    /* NT_EV_LIB */
	__u32 pid;     /* tgid */
	__u64 ts_ns;   /* bpf_ktime_get_boot_ns() */
	__u64 ino;     /* the file's inode, to skip files already probed */
	__u8 name[32]; /* the file's base name */
};

/* Value of the `drops` per-CPU array, one slot per enum nt_drop_reason. */
struct nt_drop_counter {
	__u64 count;
	__u64 bytes;
};

/* Layout of the Go structs on the way from a *tls.Conn to its fd, the same
 * from Go 1.18 to 1.26 on 64-bit targets (the sensor checks it against DWARF
 * and reflection in its tests); a program whose DWARF says otherwise has its
 * own entry in go_layouts, keyed by the attach cookie of its probes. */
#define NT_GO_TABLE_CONN_DATA 8    /* tls.Conn.conn (net.Conn iface): data word */
#define NT_GO_TABLE_TCPCONN_FD 0   /* net.TCPConn{conn{fd *netFD}} */
#define NT_GO_TABLE_NETFD_SYSFD 16 /* netFD.pfd (poll.FD) after fdMutex{uint64, uint32, uint32} */

/* The type hash of *net.TCPConn as Go 1.18 (md5), 1.19-1.24 (NOT-SHA-256)
 * and later (SHA-256, first byte flipped) compute it: a net.Conn whose itab
 * has another is not a TCP connection and its "fd" would be misread. */
#define NT_GO_TCPCONN_HASH_MD5 0xb954d952u
#define NT_GO_TCPCONN_HASH_NOTSHA256 0xbc020cb9u
#define NT_GO_TCPCONN_HASH_SHA256X 0x43fdf3b9u

/* Where a Go executable keeps a *tls.Conn's socket fd (from its DWARF),
 * and its (*net.TCPConn, net.Conn) itab type hash (from its symbol table;
 * 0: unknown, any hash of the known algorithms is accepted). Programs
 * without an entry use the 1.18-1.26 table above. */
struct nt_go_layout {
	__u32 conn_data;   /* *tls.Conn -> data word of its net.Conn */
	__u32 tcpconn_fd;  /* *net.TCPConn -> *netFD */
	__u32 netfd_sysfd; /* *netFD -> pfd.Sysfd */
	__u32 itab_hash;
	__u32 read_conn_sp; /* (*Conn).Read's receiver at sp + this at its calls; 0: unknown, use the entry probe */
};

/* Kubernetes mode: what is captured of the processes of one cgroup (its
 * cgroup v2 id, the key of `cgroup_policy`), decided in user space from the
 * capture targets and the Deployment annotations. */
#define NT_CGROUP_PORTS 8 /* a port-filter annotation names at most this many ports */
struct nt_cgroup_policy {
	__u16 capture; /* 0: nothing of this cgroup's processes */
	__u16 nports;  /* 0: any port; else only connections with one of `ports` at either end */
	__u16 ports[NT_CGROUP_PORTS];
};

/* `cgroup_mode[0]`: whether `cgroup_policy` applies, and what a cgroup it does not list gets. */
#define NT_CGROUP_OFF 0             /* no per-cgroup decisions (not Kubernetes mode) */
#define NT_CGROUP_UNLISTED_CAPTURED 1 /* no capture targets: everything but what is listed off */
#define NT_CGROUP_UNLISTED_SKIPPED 2  /* capture targets: only what is listed on */

/* Load-time settings, written into the object's .rodata before load. */
struct nt_config {
	__u32 self_tgid;          /* the sensor never captures itself */
	__u32 filter_pids;        /* 1: only tgids in `pid_filter` */
	__u32 filter_ports;       /* 1: only connections with a port in `port_filter` */
	__u32 max_bytes_per_call; /* per-call payload cap; the rest is reported as truncated */
};

#endif /* NETTAP_EVENTS_H */

/*
 * libmgmtshim.so — LD_PRELOAD shim that lets the real bluetoothd run without kernel Bluetooth.
 *
 * bluetoothd talks to the kernel through one socket: socket(AF_BLUETOOTH, SOCK_RAW, BTPROTO_HCI)
 * bound to the HCI control channel (hci_dev = HCI_DEV_NONE, hci_channel = HCI_CHANNEL_CONTROL),
 * over which it speaks the management protocol (BlueZ doc/mgmt-api.txt).  This shim turns that
 * socket into an AF_UNIX SOCK_SEQPACKET connection to a user-space server whose path is in
 * $DASHBRIDGE_MGMT_SOCKET (tests/realbluez/mgmtserver.py); a SEQPACKET socket keeps message
 * boundaries the way the kernel's raw HCI socket does.
 *
 * L2CAP and RFCOMM sockets exist but carry nothing: socket() gives a placeholder AF_UNIX socket,
 * bind() and the Bluetooth socket options succeed without effect, listen() fails (EOPNOTSUPP: so
 * bluetoothd's SDP server and profile servers fail to start, logged), and connect() fails with the
 * errno the management server chooses for that phone (a short query on a second connection to
 * it: "DBSHIM-CONNECT" + protocol + address + PSM/channel, answered with an int errno) — by
 * default EHOSTDOWN, which is how the kernel reports a page timeout.  So bluetoothd's outgoing
 * SDP searches and profile connections fail the way they do when the phone does not answer.
 *
 * Every other Bluetooth socket (other HCI channels, SCO, ISO, BNEP...) fails in socket() with
 * EAFNOSUPPORT, as on a kernel built without Bluetooth.
 *
 * Written for the dashbridge test suite; no code taken from elsewhere.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define SHIM_AF_BLUETOOTH 31
#define SHIM_BTPROTO_HCI 1
#define SHIM_HCI_DEV_NONE 0xffff
#define SHIM_HCI_CHANNEL_CONTROL 3
#define SHIM_BTPROTO_L2CAP 0
#define SHIM_BTPROTO_RFCOMM 3
#define SHIM_SOL_SOCKET SOL_SOCKET
#define SHIM_MAX_FD 65536
#define SHIM_QUERY_TIMEOUT_MS 5000

/* fd -> 0, or the Bluetooth protocol + 1 of a placeholder L2CAP/RFCOMM socket */
static unsigned char placeholder[SHIM_MAX_FD];

struct shim_sockaddr_hci {
	sa_family_t hci_family;
	unsigned short hci_dev;
	unsigned short hci_channel;
};

static int (*real_socket)(int, int, int);
static int (*real_bind)(int, const struct sockaddr *, socklen_t);
static int (*real_connect)(int, const struct sockaddr *, socklen_t);
static int (*real_listen)(int, int);
static int (*real_close)(int);
static int (*real_setsockopt)(int, int, int, const void *, socklen_t);
static int (*real_getsockopt)(int, int, int, void *, socklen_t *);

static void shim_init(void)
{
	if (!real_socket)
		real_socket = (int (*)(int, int, int))dlsym(RTLD_NEXT, "socket");
	if (!real_bind)
		real_bind = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
	if (!real_connect)
		real_connect = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
	if (!real_listen)
		real_listen = (int (*)(int, int))dlsym(RTLD_NEXT, "listen");
	if (!real_close)
		real_close = (int (*)(int))dlsym(RTLD_NEXT, "close");
	if (!real_setsockopt)
		real_setsockopt = (int (*)(int, int, int, const void *, socklen_t))dlsym(RTLD_NEXT, "setsockopt");
	if (!real_getsockopt)
		real_getsockopt = (int (*)(int, int, int, void *, socklen_t *))dlsym(RTLD_NEXT, "getsockopt");
}

static int is_placeholder(int fd)
{
	return fd >= 0 && fd < SHIM_MAX_FD && placeholder[fd];
}

static void shim_log(const char *what, int a, int b, int c)
{
	if (getenv("DASHBRIDGE_MGMT_SHIM_DEBUG"))
		fprintf(stderr, "mgmtshim: %s %d %d %d\n", what, a, b, c);
}

int socket(int domain, int type, int protocol)
{
	shim_init();
	if (domain != SHIM_AF_BLUETOOTH)
		return real_socket(domain, type, protocol);
	int flags = type & (SOCK_NONBLOCK | SOCK_CLOEXEC);
	int kind = type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (kind == SOCK_RAW && protocol == SHIM_BTPROTO_HCI) {
		/* Only the control channel is served; bind() decides.  Until then the socket is an
		 * unconnected AF_UNIX one, which bind() recognises by its domain and type. */
		shim_log("socket hci", domain, type, protocol);
		return real_socket(AF_UNIX, SOCK_SEQPACKET | flags, 0);
	}
	if (protocol == SHIM_BTPROTO_L2CAP || protocol == SHIM_BTPROTO_RFCOMM) {
		int fd = real_socket(AF_UNIX, SOCK_SEQPACKET | flags, 0);
		if (fd >= SHIM_MAX_FD) {
			real_close(fd);
			errno = EMFILE;
			return -1;
		}
		if (fd >= 0)
			placeholder[fd] = (unsigned char)(protocol + 1);
		shim_log("socket placeholder", fd, kind, protocol);
		return fd;
	}
	shim_log("socket refused", domain, kind, protocol);
	errno = EAFNOSUPPORT;
	return -1;
}

static int is_shim_socket(int fd)
{
	int domain = 0, type = 0;
	socklen_t len = sizeof(domain);
	if (real_getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 || domain != AF_UNIX)
		return 0;
	len = sizeof(type);
	if (real_getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_SEQPACKET)
		return 0;
	return 1;
}

int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
	shim_init();
	if (is_placeholder(fd))
		return 0;  /* the local adapter address or a PSM/channel: nothing to bind */
	if (!addr || len < sizeof(sa_family_t) || addr->sa_family != SHIM_AF_BLUETOOTH)
		return real_bind(fd, addr, len);
	if (!is_shim_socket(fd) || len < sizeof(struct shim_sockaddr_hci)) {
		errno = EAFNOSUPPORT;
		return -1;
	}
	const struct shim_sockaddr_hci *hci = (const struct shim_sockaddr_hci *)addr;
	if (hci->hci_dev != SHIM_HCI_DEV_NONE || hci->hci_channel != SHIM_HCI_CHANNEL_CONTROL) {
		shim_log("bind refused", hci->hci_dev, hci->hci_channel, 0);
		errno = EAFNOSUPPORT;
		return -1;
	}
	const char *path = getenv("DASHBRIDGE_MGMT_SOCKET");
	if (!path || !*path || strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		fprintf(stderr, "mgmtshim: DASHBRIDGE_MGMT_SOCKET is not set (or too long)\n");
		errno = ENODEV;
		return -1;
	}
	struct sockaddr_un sun;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	strcpy(sun.sun_path, path);
	/* A listening AF_UNIX socket accepts at once (or EAGAIN when its backlog is full, which
	 * a test server never lets happen): no EINPROGRESS to wait for, even on a non-blocking fd. */
	if (real_connect(fd, (const struct sockaddr *)&sun, sizeof(sun)) < 0) {
		int err = errno;
		fprintf(stderr, "mgmtshim: cannot reach the management server at %s: %s\n", path, strerror(err));
		errno = ENODEV;
		return -1;
	}
	shim_log("bind control channel", fd, 0, 0);
	return 0;
}

int listen(int fd, int backlog)
{
	shim_init();
	if (is_placeholder(fd)) {
		shim_log("listen refused", fd, placeholder[fd] - 1, 0);
		errno = EOPNOTSUPP;
		return -1;
	}
	return real_listen(fd, backlog);
}

int close(int fd)
{
	shim_init();
	if (fd >= 0 && fd < SHIM_MAX_FD)
		placeholder[fd] = 0;
	return real_close(fd);
}

int setsockopt(int fd, int level, int name, const void *value, socklen_t len)
{
	shim_init();
	if (is_placeholder(fd) && level != SHIM_SOL_SOCKET)
		return 0;  /* security level, MTU, L2CAP/RFCOMM options: accepted, meaningless */
	return real_setsockopt(fd, level, name, value, len);
}

int getsockopt(int fd, int level, int name, void *value, socklen_t *len)
{
	shim_init();
	if (is_placeholder(fd) && level != SHIM_SOL_SOCKET) {
		if (value && len)
			memset(value, 0, *len);
		return 0;
	}
	return real_getsockopt(fd, level, name, value, len);
}

/* Ask the management server which errno an outgoing connection to (proto, address, psm) gets. */
static int query_connect_errno(int proto, const unsigned char *bdaddr, unsigned int psm)
{
	const char *path = getenv("DASHBRIDGE_MGMT_SOCKET");
	if (!path || !*path || strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return EHOSTDOWN;
	int q = real_socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (q < 0)
		return EHOSTDOWN;
	struct sockaddr_un sun;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	strcpy(sun.sun_path, path);
	int result = EHOSTDOWN;
	if (real_connect(q, (const struct sockaddr *)&sun, sizeof(sun)) == 0) {
		unsigned char msg[14 + 1 + 6 + 2];
		memcpy(msg, "DBSHIM-CONNECT", 14);
		msg[14] = (unsigned char)proto;
		memcpy(msg + 15, bdaddr, 6);
		msg[21] = psm & 0xff;
		msg[22] = (psm >> 8) & 0xff;
		struct pollfd pfd = { .fd = q, .events = POLLIN };
		int32_t answer = 0;
		if (send(q, msg, sizeof(msg), 0) == (ssize_t)sizeof(msg) &&
		    poll(&pfd, 1, SHIM_QUERY_TIMEOUT_MS) == 1 &&
		    recv(q, &answer, sizeof(answer), 0) == (ssize_t)sizeof(answer) && answer > 0)
			result = answer;
	}
	real_close(q);
	return result;
}

int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	shim_init();
	if (!is_placeholder(fd))
		return real_connect(fd, addr, len);
	int proto = placeholder[fd] - 1;
	const unsigned char *raw = (const unsigned char *)addr;
	unsigned char bdaddr[6] = { 0 };
	unsigned int psm = 0;
	if (proto == SHIM_BTPROTO_L2CAP && len >= 10) {
		/* sockaddr_l2: family (2), psm (2, little endian), bdaddr (6), cid, type */
		psm = raw[2] | (raw[3] << 8);
		memcpy(bdaddr, raw + 4, 6);
	} else if (proto == SHIM_BTPROTO_RFCOMM && len >= 9) {
		/* sockaddr_rc: family (2), bdaddr (6), channel (1) */
		memcpy(bdaddr, raw + 2, 6);
		psm = raw[8];
	}
	int err = query_connect_errno(proto, bdaddr, psm);
	shim_log("connect refused", fd, proto, err);
	errno = err;
	return -1;
}

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
 * Every other Bluetooth socket (other HCI channels, L2CAP, RFCOMM, SCO, ISO) fails in socket()
 * with EAFNOSUPPORT, as on a kernel built without Bluetooth: bluetoothd's SDP server and its
 * profile servers fail to start (logged) and every outgoing L2CAP connection (SDP browsing,
 * profile connections) fails at once.
 *
 * Written for the dashbridge test suite; no code taken from elsewhere.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
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

struct shim_sockaddr_hci {
	sa_family_t hci_family;
	unsigned short hci_dev;
	unsigned short hci_channel;
};

static int (*real_socket)(int, int, int);
static int (*real_bind)(int, const struct sockaddr *, socklen_t);
static int (*real_connect)(int, const struct sockaddr *, socklen_t);

static void shim_init(void)
{
	if (!real_socket)
		real_socket = (int (*)(int, int, int))dlsym(RTLD_NEXT, "socket");
	if (!real_bind)
		real_bind = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
	if (!real_connect)
		real_connect = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
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
	shim_log("socket refused", domain, kind, protocol);
	errno = EAFNOSUPPORT;
	return -1;
}

static int is_shim_socket(int fd)
{
	int domain = 0, type = 0;
	socklen_t len = sizeof(domain);
	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 || domain != AF_UNIX)
		return 0;
	len = sizeof(type);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_SEQPACKET)
		return 0;
	return 1;
}

int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
	shim_init();
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

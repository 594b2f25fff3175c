/* crelay: the latency yardstick of benchmarks/run.py -- the least a user-space forwarder can
 * do on this machine, in C: per direction one process blocked in recv() on an AF_PACKET
 * socket, the VLI swap as a header rewrite, one send() per frame.  No tables, no counters,
 * no batching, no rings.
 *
 *   crelay IF_A IF_B VLI_AB HDR_AB VLI_BA HDR_BA
 *
 * A substrate frame (EtherType 0x88B5) that arrives on IF_A with VLI VLI_AB leaves on IF_B as
 * HDR_AB (hex: dst MAC, src MAC, 0x8100 + tag, 0x88B5, VLI out) followed by what came after
 * the VLI (LEN and payload); the same from IF_B to IF_A with VLI_BA / HDR_BA.  The kernel
 * strips the 802.1Q tag before an AF_PACKET socket sees the frame (DESIGN section 2), so the
 * frame read here is untagged: dst src 0x88B5 VLI LEN payload.
 *
 * Built by the benchmark at run time with the system compiler: cc -O2 -o crelay crelay.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

#define MAXHDR 64
#define BUFSZ 65600

static int open_sock(const char *ifname, int proto)
{
    struct sockaddr_ll sll;
    int fd = socket(AF_PACKET, SOCK_RAW, htons(proto));
    if (fd < 0) {
        perror("socket");
        exit(1);
    }
    memset(&sll, 0, sizeof sll);
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(proto);
    sll.sll_ifindex = (int)if_nametoindex(ifname);
    if (sll.sll_ifindex == 0 || bind(fd, (struct sockaddr *)&sll, sizeof sll) < 0) {
        perror(ifname);
        exit(1);
    }
    return fd;
}

static size_t unhex(const char *s, unsigned char *out, size_t max)
{
    size_t n = strlen(s) / 2, i;
    unsigned int x;
    if (n > max) {
        fprintf(stderr, "crelay: header too long\n");
        exit(2);
    }
    for (i = 0; i < n; i++) {
        if (sscanf(s + 2 * i, "%2x", &x) != 1) {
            fprintf(stderr, "crelay: bad hex %s\n", s);
            exit(2);
        }
        out[i] = (unsigned char)x;
    }
    return n;
}

static void relay(const char *src, const char *dst, const char *vli, const char *hdr_hex)
{
    static unsigned char buf[BUFSZ];
    unsigned char hdr[MAXHDR];
    size_t hlen = unhex(hdr_hex, hdr, MAXHDR);
    /* receive: ETH_P_ALL like the router (its sends on the other interface are skipped by
       PACKET_IGNORE_OUTGOING and, on kernels without it, by the pkttype test below) */
    int rx = open_sock(src, ETH_P_ALL);
    int tx = open_sock(dst, 0);                 /* send only: protocol 0 */
    int one = 1;
    unsigned int want = (unsigned int)atoi(vli);
    struct sockaddr_ll from;
    socklen_t flen;
    unsigned char *start = buf + MAXHDR;       /* room to write the header before the frame */

    setsockopt(rx, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one);
    for (;;) {
        flen = sizeof from;
        ssize_t n = recvfrom(rx, start, BUFSZ - MAXHDR, 0, (struct sockaddr *)&from, &flen);
        if (n < 0)
            continue;
        if (from.sll_pkttype == PACKET_OUTGOING || n < 18)
            continue;
        if (start[12] != 0x88 || start[13] != 0xB5 ||
            ((unsigned int)start[14] << 8 | start[15]) != want)
            continue;
        /* header out + (LEN, payload) from offset 16 */
        memcpy(start + 16 - hlen, hdr, hlen);
        send(tx, start + 16 - hlen, (size_t)n - 16 + hlen, 0);
    }
}

int main(int argc, char **argv)
{
    pid_t child;
    if (argc != 7) {
        fprintf(stderr, "usage: crelay IF_A IF_B VLI_AB HDR_AB VLI_BA HDR_BA\n");
        return 2;
    }
    child = fork();
    if (child < 0) {
        perror("fork");
        return 1;
    }
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);       /* never outlive the parent */
        relay(argv[2], argv[1], argv[5], argv[6]);
    }
    relay(argv[1], argv[2], argv[3], argv[4]);
    return 0;
}

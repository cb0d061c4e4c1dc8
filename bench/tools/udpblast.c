/* udpblast: send a stream of UDP datagrams to 127.0.0.1:PORT at a paced rate.
 *
 *   udpblast FILE PORT PACKETS_PER_SECOND REPEAT [SOURCE_ADDRESS]
 *
 * SOURCE_ADDRESS (a loopback address such as 127.0.0.2) makes the stream another exporter.
 * FILE holds repeated [2-byte big-endian length][payload] frames (the softflowd fixtures' format).
 * The whole file is sent REPEAT times. Pacing is checked every 16 datagrams against a monotonic
 * clock; sendmmsg() sends those 16 in one call, so the sender is never the bottleneck.
 * Prints the seconds it took. Built by bench/collector.py with the system C compiler.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: %s FILE PORT PPS REPEAT [SOURCE_ADDRESS]\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 1; }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(size);
    if (fread(buf, 1, size, f) != (size_t)size) { perror("read"); return 1; }
    fclose(f);
    size_t n = 0, cap = 1024;
    struct iovec *iov = malloc(cap * sizeof *iov);
    for (long pos = 0; pos + 2 <= size;) {
        size_t len = (buf[pos] << 8) | buf[pos + 1];
        if (n == cap) { cap *= 2; iov = realloc(iov, cap * sizeof *iov); }
        iov[n].iov_base = buf + pos + 2;
        iov[n].iov_len = len;
        n++;
        pos += 2 + len;
    }
    int port = atoi(argv[2]);
    double pps = atof(argv[3]);
    long repeat = atol(argv[4]);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    int sndbuf = 8 << 20;
    setsockopt(s, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    if (argc == 6) {
        struct sockaddr_in src = {.sin_family = AF_INET};
        if (inet_pton(AF_INET, argv[5], &src.sin_addr) != 1 ||
            bind(s, (struct sockaddr *)&src, sizeof src) != 0) {
            perror(argv[5]);
            return 1;
        }
    }
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
    struct mmsghdr msgs[16];
    double start = now();
    long sent = 0;
    for (long r = 0; r < repeat; r++) {
        for (size_t i = 0; i < n; i += 16) {
            size_t k = n - i < 16 ? n - i : 16;
            for (size_t j = 0; j < k; j++) {
                memset(&msgs[j], 0, sizeof msgs[j]);
                msgs[j].msg_hdr.msg_name = &dst;
                msgs[j].msg_hdr.msg_namelen = sizeof dst;
                msgs[j].msg_hdr.msg_iov = &iov[i + j];
                msgs[j].msg_hdr.msg_iovlen = 1;
            }
            double due = start + sent / pps;
            /* sleep while well ahead, spin the last 100 us: at low rates the sender's core
               stays free for whatever else the machine runs */
            double ahead = due - now();
            if (ahead > 0.0002) {
                if (ahead > 0.5) ahead = 0.5;
                struct timespec ts = {0, (long)((ahead - 0.0001) * 1e9)};
                nanosleep(&ts, NULL);
            }
            while (now() < due) {}
            size_t done = 0;
            while (done < k) {
                int m = sendmmsg(s, msgs + done, k - done, 0);
                if (m < 0) { perror("sendmmsg"); return 1; }
                done += m;
            }
            sent += k;
        }
    }
    printf("%.6f\n", now() - start);
    return 0;
}

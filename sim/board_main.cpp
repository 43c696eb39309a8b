// The simulated board: a Verilated board top (UART pins) bridged to a pseudo-terminal.
//
// Prints the pty's slave path on stdout, then runs the top forever: bytes the host writes to
// the pty are sent into the top's rx pin as 8N1 frames (DIVISOR cycles per bit), frames on the
// tx pin are decoded and written back to the pty. Faults (per byte, each with its own
// probability) are injected in both directions: bit flips, drops, duplicates, delays (an idle
// gap on the line to the board, a hold of the byte to the host); and board resets (the top's
// rst held for a few cycles, per byte from the host). On SIGTERM/SIGINT the counts are written
// as JSON to the --stats file and the program exits.
//
// Built by zeroskip.sim.board_sim (Verilator --exe); options:
//   --divisor N --seed N --stats FILE --flip P --drop P --dup P --delay P --reset P
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <random>
#include <string>
#include <termios.h>
#include <unistd.h>
#include <vector>

#include "verilated.h"
#include VTOP_HEADER

static volatile std::sig_atomic_t g_stop = 0;
static void on_signal(int) { g_stop = 1; }

struct Faults {
    double flip = 0, drop = 0, dup = 0, delay = 0, reset = 0;
};

struct Stats {
    unsigned long long cycles = 0, bytes_in = 0, bytes_out = 0;
    unsigned long long flip_in = 0, drop_in = 0, dup_in = 0, delay_in = 0;
    unsigned long long flip_out = 0, drop_out = 0, dup_out = 0, delay_out = 0;
    unsigned long long resets = 0;
};

int main(int argc, char** argv) {
    Verilated::commandArgs(argc, argv);
    int divisor = 8;
    unsigned seed = 1;
    std::string stats_path;
    Faults f;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string k = argv[i];
        const char* v = argv[i + 1];
        if (k == "--divisor") divisor = std::atoi(v);
        else if (k == "--seed") seed = (unsigned)std::strtoul(v, nullptr, 0);
        else if (k == "--stats") stats_path = v;
        else if (k == "--flip") f.flip = std::atof(v);
        else if (k == "--drop") f.drop = std::atof(v);
        else if (k == "--dup") f.dup = std::atof(v);
        else if (k == "--delay") f.delay = std::atof(v);
        else if (k == "--reset") f.reset = std::atof(v);
    }
    std::signal(SIGTERM, on_signal);
    std::signal(SIGINT, on_signal);
    std::signal(SIGHUP, on_signal);

    int master = -1, slave = -1;
    char name[256];
    if (openpty(&master, &slave, name, nullptr, nullptr) != 0) {
        std::perror("openpty");
        return 2;
    }
    termios t;
    tcgetattr(slave, &t);
    cfmakeraw(&t);
    tcsetattr(slave, TCSANOW, &t);
    fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);
    std::printf("%s\n", name);
    std::fflush(stdout);

    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> uni(0.0, 1.0);
    auto chance = [&](double p) { return p > 0 && uni(rng) < p; };

    VTOP* top = new VTOP;
    Stats st;
    top->clk = 0;
    top->rst = 1;
    top->rx = 1;
    auto tick = [&]() {
        top->clk = 1;
        top->eval();
        top->clk = 0;
        top->eval();
        st.cycles++;
    };
    for (int i = 0; i < 8; i++) tick();
    top->rst = 0;

    // host -> board: entries >= 0 are bytes, < 0 are idle gaps of -entry cycles
    std::deque<long> to_board;
    int rx_bit = -1;          // bit of the current frame (-1: none), 0 = start .. 9 = stop
    long rx_timer = 0;
    int rx_byte = 0;
    long gap = 0;
    int reset_hold = 0;
    // board -> host
    int tx_state = 0;         // 0 idle, 1 in frame
    long tx_timer = 0;
    int tx_bit = 0, tx_byte = 0;
    std::deque<std::pair<unsigned long long, unsigned char>> to_host;   // (release cycle, byte)
    std::vector<unsigned char> out;
    unsigned long long quiet = 0;
    unsigned char buf[4096];

    while (!g_stop) {
        // the host's bytes are read when the line to the board is idle, every 16 cycles (a
        // byte takes 10 x divisor cycles on the line; a read() per cycle would cost more
        // than the simulation)
        if (to_board.empty() && rx_bit < 0 && gap == 0 && (st.cycles & 15) == 0) {
            ssize_t n = read(master, buf, sizeof buf);
            for (ssize_t i = 0; i < n; i++) {
                st.bytes_in++;
                unsigned char b = buf[i];
                if (chance(f.reset)) { reset_hold = 4; st.resets++; }
                if (chance(f.drop)) { st.drop_in++; continue; }
                if (chance(f.flip)) { b ^= 1u << (rng() % 8); st.flip_in++; }
                if (chance(f.delay)) {
                    to_board.push_back(-(long)(1 + rng() % (400 * (unsigned long)divisor)));
                    st.delay_in++;
                }
                to_board.push_back(b);
                if (chance(f.dup)) { to_board.push_back(b); st.dup_in++; }
            }
        }
        // drive the rx line
        if (rx_bit < 0) {
            if (gap > 0) {
                gap--;
            } else if (!to_board.empty()) {
                long e = to_board.front();
                to_board.pop_front();
                if (e < 0) gap = -e;
                else { rx_byte = (int)e; rx_bit = 0; rx_timer = divisor; }
            }
        }
        if (rx_bit >= 0) {
            top->rx = rx_bit == 0 ? 0 : rx_bit == 9 ? 1 : (rx_byte >> (rx_bit - 1)) & 1;
            if (--rx_timer == 0) {
                rx_timer = divisor;
                if (++rx_bit == 10) rx_bit = -1;
            }
        } else {
            top->rx = 1;
        }
        top->rst = reset_hold > 0;
        if (reset_hold > 0) reset_hold--;
        tick();
        // decode the tx line (sampled mid-bit)
        int line = top->tx;
        if (tx_state == 0) {
            if (!line) { tx_state = 1; tx_timer = divisor / 2 + divisor; tx_bit = 0; tx_byte = 0; }
        } else if (--tx_timer == 0) {
            if (tx_bit < 8) {
                tx_byte |= line << tx_bit;
                tx_bit++;
                tx_timer = divisor;
            } else {
                // stop bit sampled (a 0 would be a framing error: the top never sends one)
                tx_state = 0;
                unsigned char b = (unsigned char)tx_byte;
                if (chance(f.drop)) {
                    st.drop_out++;
                } else {
                    if (chance(f.flip)) { b ^= 1u << (rng() % 8); st.flip_out++; }
                    unsigned long long when = st.cycles;
                    if (chance(f.delay)) { when += 1 + rng() % (400 * (unsigned long)divisor); st.delay_out++; }
                    if (!to_host.empty() && to_host.back().first > when) when = to_host.back().first;
                    to_host.push_back({when, b});
                    if (chance(f.dup)) { to_host.push_back({when, b}); st.dup_out++; }
                }
            }
        }
        while (!to_host.empty() && to_host.front().first <= st.cycles) {
            out.push_back(to_host.front().second);
            to_host.pop_front();
        }
        if (!out.empty() && (out.size() >= 64 || tx_state == 0)) {
            ssize_t n = write(master, out.data(), out.size());
            if (n > 0) { st.bytes_out += n; out.erase(out.begin(), out.begin() + n); }
        }
        // nothing to do: sleep until the host writes (the board may still be computing)
        bool busy = rx_bit >= 0 || gap > 0 || !to_board.empty() || tx_state || !to_host.empty()
                    || !out.empty() || top->led_busy || !top->tx;
        quiet = busy ? 0 : quiet + 1;
        if (quiet > 50000) {
            pollfd p{master, POLLIN, 0};
            poll(&p, 1, 2);
        }
    }
    if (!stats_path.empty()) {
        FILE* fp = std::fopen(stats_path.c_str(), "w");
        if (fp) {
            std::fprintf(fp,
                "{\"cycles\": %llu, \"bytes_in\": %llu, \"bytes_out\": %llu, "
                "\"flip_in\": %llu, \"drop_in\": %llu, \"dup_in\": %llu, \"delay_in\": %llu, "
                "\"flip_out\": %llu, \"drop_out\": %llu, \"dup_out\": %llu, \"delay_out\": %llu, "
                "\"resets\": %llu}\n",
                st.cycles, st.bytes_in, st.bytes_out, st.flip_in, st.drop_in, st.dup_in,
                st.delay_in, st.flip_out, st.drop_out, st.dup_out, st.delay_out, st.resets);
            std::fclose(fp);
        }
    }
    top->final();
    delete top;
    close(master);
    close(slave);
    return 0;
}

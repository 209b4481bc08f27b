// dlgpu/testing/cuda_host_sm90.h -- Hopper's asynchronous machinery on the host, for the CPU harness.
//
// cuda_host.h includes this header last (and this header cuda_host_tma.h, the mbarrier and TMA half);
// kernels reach them only through kernels/ptx_sm90.cuh, whose wrappers call the dlgpu_host::sm90
// functions under DLGPU_HOST_HARNESS.  Each model follows the PTX ISA's definition and is never kinder
// than the hardware: what the ISA leaves undefined fails here with a message, or produces poison (0xFF
// bytes: NaN) where a kernel would read stale data.
//
//   shared window   a shared-memory address (cvta.to.shared) is the offset into the block's dynamic
//                   shared buffer; objects that TMA, wgmma and mbarriers touch must live there (static
//                   __shared__ arrays are outside the window and refused).  Swizzles act on these
//                   addresses' bits, as the hardware's act on shared addresses.
//   mbarrier        the 8 bytes in shared memory hold a token written by mbarrier.init; the state
//                   (phase, pending arrivals of the count, transaction count) lives beside it, so a
//                   barrier used before init, or overwritten by ordinary stores, is caught.  A phase
//                   completes when its pending arrivals and its tx-count both reach zero.  An arrival
//                   in a phase with none pending left (more arrivals than the count, or a producer a
//                   phase ahead) fails.  try_wait.parity(p) succeeds when the current phase's parity
//                   differs from p (the phase of parity p completed); it blocks while nothing moves and
//                   fails after DLGPU_HARNESS_MBARRIER_TIMEOUT_S (default 60) seconds without progress
//                   anywhere in the launch: a deadlock.
//   TMA loads       cp.async.bulk.tensor reads the box from global memory at issue (out-of-bounds
//                   elements: zeros, or NaN with the tensor map's NaN fill), fills the destination with
//                   poison, and lands the bytes (swizzled) only when a thread waits on the mbarrier's
//                   current phase; the box's full byte count is the transaction count, however much
//                   of it is out of bounds.  A load into bytes that an earlier load, not yet landed,
//                   also targets fails (a producer overrunning its ring).  The tensor map is the
//                   harness's own 128-byte format (HostTensorMap below, written by dlgpu/cuda/tma.py),
//                   since there is no driver to encode one.
//   cp.async +      cp.async.mbarrier.arrive.noinc hands every cp.async the thread has issued and not seen
//   mbarrier        land to the barrier, with one arrival (counted against the init count): the copies
//                   land, and then the arrival happens, when a thread waits on the barrier's current phase
//                   (their destinations hold poison until then, as in cuda_host.h's cp.async model).
//   TMA stores      the shared source is read at issue and must be unchanged at
//                   cp.async.bulk.wait_group.read; global memory is written (in-bounds elements only)
//                   at the cp.async.bulk.wait_group that covers the store, never before.
//   wgmma           mma_async is a warpgroup collective: its 128 threads must issue the same
//                   instruction with the same descriptors.  A and B are read through the descriptors
//                   (layouts and swizzles of the PTX ISA's "shared memory matrix layout") at issue, and
//                   read again when the group completes: a change in between fails (a stage released
//                   or refilled under an in-flight wgmma).  The accumulator registers hold poison from
//                   issue until the wgmma.wait_group that covers the group; a write to them meanwhile
//                   fails.  A wgmma whose accumulators became accessible since the last wgmma.fence
//                   (or that comes before any fence) fails, except when it accumulates into registers
//                   that an in-flight wgmma of the same shape writes (the ISA's exception).
//   setmaxnreg      a warpgroup collective; values in [24, 256], multiples of 8; the warpgroups of a
//                   block that have set a budget must fit the 64K-register file together.
//   clusters        the CTAs of a cluster (Launch.cluster, which harness.py checks against the kernel's
//                   __cluster_dims__) run at once, in slots of their own; %cluster_ctarank is the CTA's
//                   rank; a remote mbarrier arrival or a multicast TMA load reaches the peer's barrier
//                   and shared bytes at the same shared address; barrier.cluster completes when every
//                   thread of the cluster that has not exited has arrived.  A CTA's shared memory is
//                   poisoned when it exits, and a peer that reaches into it afterwards fails; the next
//                   cluster starts once all of the cluster's CTAs have exited.
//   async proxy     TMA and wgmma read and write shared memory through the async proxy.  Each CTA keeps
//                   the async proxy's view of its window: TMA loads write both it and the window; a
//                   fence.proxy.async (by any thread of the CTA) copies the window into it; a wgmma at
//                   issue, or a TMA store at issue, whose bytes differ between the two fails: generic-proxy
//                   writes (ordinary stores, cp.async) that no fence has made visible since they happened.
//                   The fence is modelled CTA-wide, not per thread.  mbarrier.init is such a write too:
//                   TMA may signal a barrier only after fence.mbarrier_init (or fence.proxy.async) has
//                   followed its init, and a peer CTA (remote arrival, multicast) only after
//                   fence.mbarrier_init.release.cluster and then a completed barrier.cluster.
// Not modelled: the async proxy's ordering of TMA writes before generic writes to the same bytes,
// the cluster's shared::cluster loads and stores (only remote arrivals and multicast), descriptor
// base offsets other than 0, A operands in registers, sparse wgmma, im2col tensor maps, interleaved
// layouts, and the tensor cores' accumulation order.
#pragma once

#include <array>
#include <map>
#include <memory>
#include <unordered_map>

// A kernel's cluster shape: the launch states it (dlgpu.cuda.launch.Launch.cluster), and harness.py checks
// that it is the one the kernel declares.
#define __cluster_dims__(...)

namespace dlgpu_host {
namespace sm90 {

// ---------------------------------------------------------------- progress, waiting, block identity
// Every model event (an arrival, a landing, a collective) counts as progress; a wait that sees none
// for the timeout is a deadlock.
static std::atomic<unsigned long long> g_progress{0};
inline void progress() { g_progress.fetch_add(1, std::memory_order_relaxed); }

inline double wait_timeout_seconds()
{
    const char* text = std::getenv("DLGPU_HARNESS_MBARRIER_TIMEOUT_S");
    const double value = text ? std::atof(text) : 0.0;
    return value > 0.0 ? value : 60.0;
}

// Tracks one blocked wait: `stalled()` is true once nothing anywhere moved for the timeout.
struct StallClock {
    unsigned long long seen = g_progress.load();
    std::chrono::steady_clock::time_point since = std::chrono::steady_clock::now();
    bool stalled()
    {
        const unsigned long long now_progress = g_progress.load();
        const auto now = std::chrono::steady_clock::now();
        if (now_progress != seen) {
            seen = now_progress;
            since = now;
            return false;
        }
        return std::chrono::duration<double>(now - since).count() > wait_timeout_seconds();
    }
};

inline unsigned long long block_linear()
{
    return blockIdx.x + (unsigned long long)gridDim.x * (blockIdx.y + (unsigned long long)gridDim.y * blockIdx.z);
}

inline unsigned thread_linear() { return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z); }

// ---------------------------------------------------------------- the shared window
inline unsigned shared_address(const void* p)
{
    const uintptr_t base = reinterpret_cast<uintptr_t>(dynamic_shared()), at = reinterpret_cast<uintptr_t>(p);
    if (at < base || at >= base + g_dynamic_bytes)
        fail("a shared-memory address was taken of memory outside the dynamic shared buffer (TMA, wgmma and "
             "mbarrier objects must live in extern __shared__ memory under the harness)");
    return (unsigned)(at - base);
}

inline unsigned char* shared_bytes(unsigned address, size_t bytes, const char* what)
{
    if ((size_t)address + bytes > g_dynamic_bytes)
        fail(std::string(what) + ": shared address range [" + std::to_string(address) + ", +" +
             std::to_string(bytes) + ") leaves the shared window");
    return dynamic_shared() + address;
}

// ---------------------------------------------------------------- the async proxy
// TMA and wgmma reach shared memory through the async proxy, which sees what the generic proxy (ordinary
// stores, cp.async) wrote only after a fence.proxy.async.  Each slot keeps the async proxy's view of its
// window (Slot::async_view): TMA writes land in both; a fence copies the window into the view; an async
// read of bytes where the two differ fails -- the hardware could have read them stale.
static std::mutex g_async_view_mutex;  // guards every Slot::async_view

inline void publish_mbarrier_inits(bool cluster);  // cuda_host_tma.h

// fence.proxy.async.shared::cta.  Modelled block-wide: everything in the window when some thread fences
// becomes visible, so a kernel passes when a fence follows every generic write that an async read needs.
inline void fence_proxy_async()
{
    publish_mbarrier_inits(false);  // the fence orders earlier mbarrier.init writes for the TMA unit too
    Slot& slot = *t_slot;
    std::lock_guard<std::mutex> lock(g_async_view_mutex);
    Unseen unseen;  // the copy reads bytes that other threads may be writing; it orders nothing between them
    std::memcpy(slot.async_view.data(), slot.dynamic, g_dynamic_bytes);
}

// Under g_async_view_mutex: `what` reads [address, +bytes) of this CTA's window through the async proxy.
inline void check_async_view(unsigned address, size_t bytes, const char* what)
{
    const Slot& slot = *t_slot;
    if (std::memcmp(slot.dynamic + address, slot.async_view.data() + address, bytes) != 0)
        fail(std::string(what) + " reads shared bytes [" + std::to_string(address) + ", +" + std::to_string(bytes) +
             ") that ordinary stores or cp.async changed after the last fence.proxy.async: the async proxy may "
             "read them stale (fence.proxy.async.shared::cta after the writes, and after the wait that shows "
             "them, before the wgmma or TMA store)");
}

// The async proxy writing `count` bytes at `address` of `slot`'s window (a TMA load landing, or its poison).
inline void async_write(Slot& slot, unsigned address, const void* bytes, size_t count)
{
    std::memcpy(slot.dynamic + address, bytes, count);
    std::lock_guard<std::mutex> lock(g_async_view_mutex);
    std::memcpy(slot.async_view.data() + address, bytes, count);
}

// Swizzle<B, 4, 3> on shared addresses: bits [7, 7 + B) XOR-ed into the 16-byte chunk bits [4, 4 + B),
// B = 1, 2, 3 for the 32-, 64- and 128-byte modes (the pattern repeats every 8 rows of `width` bytes).
inline unsigned swizzle_bits(unsigned width_bytes)
{
    switch (width_bytes) {
    case 0: return 0;
    case 32: return 1;
    case 64: return 2;
    case 128: return 3;
    }
    fail("swizzle width " + std::to_string(width_bytes) + " is not 0, 32, 64 or 128 bytes");
}
inline unsigned swizzle(unsigned address, unsigned bits)
{
    return address ^ (((address >> 7) & ((1u << bits) - 1u)) << 4);
}

// ---------------------------------------------------------------- warpgroup collectives
// A collective's per-thread contribution: one struct for every kind, the fields a kind uses.
struct WgmmaOp;
struct Contribution {
    unsigned long long desc_a = 0, desc_b = 0;
    int n = 0, precision = 0, trans_a = 0, trans_b = 0, scale_d = 0, registers = 0;
    std::shared_ptr<WgmmaOp> chained;  // the in-flight op whose result this one accumulates into
    std::vector<float> accumulators;   // the input accumulators, when not chained
};

struct Warpgroup {
    std::mutex mutex;
    std::condition_variable cv;
    int arrived = 0;
    unsigned long long generation = 0;
    std::string kind;
    std::array<Contribution, 128> slots;
    std::shared_ptr<WgmmaOp> result;
    std::atomic<int> registers{0};  // the setmaxnreg budget, 0 until one is set (read by other warpgroups)
    unsigned long long block = 0;
};

static std::mutex g_warpgroups_mutex;
static std::map<std::pair<unsigned long long, int>, std::weak_ptr<Warpgroup>> g_warpgroups;

inline std::shared_ptr<Warpgroup> find_warpgroup(unsigned long long block, int index)
{
    std::lock_guard<std::mutex> lock(g_warpgroups_mutex);
    auto& entry = g_warpgroups[{block, index}];
    std::shared_ptr<Warpgroup> found = entry.lock();
    if (!found) {
        found = std::make_shared<Warpgroup>();
        found->block = block;
        entry = found;
        if (g_warpgroups.size() > 256)  // forget the warpgroups of finished blocks and launches
            for (auto it = g_warpgroups.begin(); it != g_warpgroups.end();)
                it = it->second.expired() ? g_warpgroups.erase(it) : std::next(it);
    }
    return found;
}

// What one thread remembers between model calls; reset when the thread starts another block.
struct Pending {
    std::shared_ptr<WgmmaOp> op;
    float* d;
    int count;
};
struct BulkStore;
struct ThreadState {
    unsigned long long block = ~0ull;
    std::shared_ptr<Warpgroup> warpgroup;
    int warpgroup_index = -1;
    std::vector<Pending> open;                  // wgmma ops issued since the last commit_group
    std::deque<std::vector<Pending>> groups;    // committed wgmma groups, oldest first
    unsigned long long events = 0, last_fence = 0;
    std::unordered_map<const float*, unsigned long long> accessible;  // d -> when it became readable
    std::vector<std::shared_ptr<BulkStore>> open_stores;
    std::deque<std::vector<std::shared_ptr<BulkStore>>> store_groups;
    bool cluster_arrived = false;               // barrier.cluster.arrive without its wait yet
    unsigned long long cluster_phase = 0;
};
static thread_local ThreadState t_state;

inline ThreadState& me()
{
    const unsigned long long block = block_linear();
    if (t_state.block != block) {
        t_state = ThreadState{};
        t_state.block = block;
    }
    return t_state;
}

inline Warpgroup& my_warpgroup(const char* what)
{
    ThreadState& state = me();
    const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
    const int index = (int)(thread_linear() / 128);
    if (threads < 128u * (index + 1))
        fail(std::string(what) + " needs a whole warpgroup (4 warps); the block has " + std::to_string(threads) +
             " threads");
    if (!state.warpgroup || state.warpgroup_index != index) {
        state.warpgroup = find_warpgroup(state.block, index);
        state.warpgroup_index = index;
    }
    return *state.warpgroup;
}

// All 128 threads contribute; the last to arrive runs `build(slots)`, whose result every thread gets.
template <class Build>
inline std::shared_ptr<WgmmaOp> collective(const char* what, Contribution mine, Build build)
{
    Warpgroup& wg = my_warpgroup(what);
    const int index = (int)(thread_linear() % 128);
    if (g_aborted) throw Abort{};
    std::unique_lock<std::mutex> lock(wg.mutex);
    if (wg.arrived == 0) {
        wg.kind = what;
    } else if (wg.kind != what) {
        fail(std::string("threads of one warpgroup disagree on a collective: ") + what + " vs " + wg.kind);
    }
    wg.slots[index] = std::move(mine);
    progress();
    if (++wg.arrived == 128) {
        wg.result = build(wg.slots);
        for (Contribution& slot : wg.slots) slot = Contribution{};
        wg.arrived = 0;
        ++wg.generation;
        wg.cv.notify_all();
        return wg.result;
    }
    const unsigned long long generation = wg.generation;
    StallClock clock;
    while (wg.generation == generation) {
        wg.cv.wait_for(lock, std::chrono::milliseconds(100));
        if (g_aborted) throw Abort{};
        if (wg.generation == generation && clock.stalled())
            fail(std::string("deadlock: ") + what + " waited for the rest of its warpgroup (" +
                 std::to_string(wg.arrived) + " of 128 threads arrived)");
    }
    return wg.result;
}

// ---------------------------------------------------------------- setmaxnreg
template <bool kIncrease> inline void setmaxnreg(int registers)
{
    const char* what = kIncrease ? "setmaxnreg.inc" : "setmaxnreg.dec";
    if (registers < 24 || registers > 256 || registers % 8 != 0)
        fail(std::string(what) + ": " + std::to_string(registers) + " is not a multiple of 8 in [24, 256]");
    Contribution mine;
    mine.registers = registers;
    Warpgroup& wg = my_warpgroup(what);
    collective(what, std::move(mine), [&](std::array<Contribution, 128>& slots) {
        for (const Contribution& slot : slots)
            if (slot.registers != registers)
                fail(std::string(what) + ": threads of the warpgroup disagree on the count");
        wg.registers = registers;
        return std::shared_ptr<WgmmaOp>();
    });
    // The register file holds 64K 32-bit registers; every warpgroup with a budget claims 128 x its count.
    long long claimed = 0;
    std::string parts;
    {
        std::lock_guard<std::mutex> lock(g_warpgroups_mutex);
        for (auto& [key, weak] : g_warpgroups) {
            std::shared_ptr<Warpgroup> other = weak.lock();
            if (other && key.first == wg.block && other->registers) {
                claimed += 128LL * other->registers;
                parts += (parts.empty() ? "" : " + ") + std::to_string(other->registers);
            }
        }
    }
    if (claimed > 65536)
        fail("setmaxnreg: the warpgroups' budgets (" + parts + ") x 128 threads exceed the 65536-register file");
}

// ---------------------------------------------------------------- wgmma: descriptors and operands
// The 64-bit matrix descriptor (PTX ISA, "matrix descriptor format"): start address, leading and
// stride byte offsets, each stored >> 4 in 14 bits; base offset in bits 49..51; the layout in bits
// 62..63: 0 no swizzle (interleave), 1 128-byte, 2 64-byte, 3 32-byte swizzle.
struct Descriptor {
    unsigned start, leading, stride, base_offset, swizzle_width;
};
inline Descriptor decode_descriptor(unsigned long long desc, const char* operand)
{
    Descriptor d;
    d.start = (unsigned)(desc & 0x3fffu) << 4;
    d.leading = (unsigned)((desc >> 16) & 0x3fffu) << 4;
    d.stride = (unsigned)((desc >> 32) & 0x3fffu) << 4;
    d.base_offset = (unsigned)((desc >> 49) & 7u);
    static const unsigned widths[4] = {0, 128, 64, 32};
    d.swizzle_width = widths[desc >> 62];
    if (d.base_offset != 0)
        fail(std::string("wgmma: the ") + operand + " descriptor's base offset is not 0 (not modelled: place "
             "swizzled tiles on their pattern's boundary)");
    if (d.swizzle_width && d.start % (8 * d.swizzle_width) >= d.swizzle_width)
        fail(std::string("wgmma: the ") + operand + " descriptor starts " +
             std::to_string(d.start % (8 * d.swizzle_width)) +
             " bytes into its swizzle atom, past the atom's first row");
    return d;
}

// The byte address of element (mn, k) of an operand of `element_bytes` elements, K = 32 bytes of k.
// Units of 16 bytes hold T = 16 / element_bytes elements.  From the ISA's canonical layouts:
//   K-major, no swizzle:   core matrices of 8 rows x 16 bytes, rows 16 bytes apart; the next 8 rows of
//                          mn at `stride`, the second 16 bytes of k at `leading`.
//   K-major, W-byte swizzle: rows of W bytes, 8 rows an atom; the next 8 rows at `stride`; k runs
//                          along the row (`leading` unused).
//   MN-major, no swizzle:  core matrices of 8 k-rows x 16 bytes of mn, rows 16 bytes apart; the next
//                          16 bytes of mn at `stride`, the next 8 k at `leading`.
//   MN-major, W-byte swizzle: rows of W bytes of mn, one per k, 8 rows an atom; the next W bytes of
//                          mn at `leading`, the next 8 k at `stride`.
// The swizzle is then applied to the address.
inline unsigned operand_address(const Descriptor& d, bool mn_major, int element_bytes, int mn, int k)
{
    const int per_unit = 16 / element_bytes;
    unsigned offset;
    if (!mn_major) {
        const int row = mn % 8, group = mn / 8, unit = k / per_unit, within = k % per_unit;
        if (d.swizzle_width == 0)
            offset = row * 16 + group * d.stride + unit * d.leading + within * element_bytes;
        else
            offset = row * d.swizzle_width + group * d.stride + unit * 16 + within * element_bytes;
    } else {
        const int unit = mn / per_unit, within = mn % per_unit, row = k % 8, group = k / 8;
        if (d.swizzle_width == 0) {
            offset = within * element_bytes + unit * d.stride + row * 16 + group * d.leading;
        } else {
            const int units_per_row = (int)d.swizzle_width / 16;
            offset = within * element_bytes + (unit % units_per_row) * 16 + (unit / units_per_row) * d.leading +
                     row * d.swizzle_width + group * d.stride;
        }
    }
    return swizzle(d.start + offset, swizzle_bits(d.swizzle_width));
}

// The raw bits of a rows x K operand, element (r, k) at [r * K + k].
// At issue (`issue`), every element must read the same through the async proxy (check_async_view).
inline std::vector<unsigned> read_operand(unsigned long long desc, bool mn_major, int element_bytes, int rows,
                                          int k_extent, const char* operand, bool issue)
{
    const Descriptor d = decode_descriptor(desc, operand);
    if (!mn_major && d.swizzle_width && d.start % d.swizzle_width + 32 > d.swizzle_width)
        fail(std::string("wgmma: the ") + operand + " slice of k starts " + std::to_string(d.start % d.swizzle_width) +
             " bytes into a " + std::to_string(d.swizzle_width) + "-byte swizzled row and would leave it");
    std::vector<unsigned> bits((size_t)rows * k_extent);
    std::unique_lock<std::mutex> view_lock(g_async_view_mutex, std::defer_lock);
    if (issue) view_lock.lock();
    const std::string what = std::string("wgmma.mma_async (operand ") + operand + ")";
    for (int r = 0; r < rows; ++r)
        for (int k = 0; k < k_extent; ++k) {
            const unsigned address = operand_address(d, mn_major, element_bytes, r, k);
            if (address % element_bytes) fail("wgmma: misaligned operand element");
            unsigned value = 0;
            std::memcpy(&value, shared_bytes(address, element_bytes, "wgmma operand"), element_bytes);
            if (issue) check_async_view(address, element_bytes, what.c_str());
            bits[(size_t)r * k_extent + k] = value;
        }
    return bits;
}

// precision 0: tf32 (the tensor core reads the top 19 bits), 1: bf16, 2: fp16.
inline float operand_value(unsigned bits, int precision)
{
    if (precision == 0) return tf32_operand(bits);
    if (precision == 1) return bf16_bits_to_float((unsigned short)bits);
    return half_bits_to_float((unsigned short)bits);
}

// ---------------------------------------------------------------- wgmma: the asynchronous op
// D (64 x n, fp32) = A (64 x K) * B (K x n) + scale_d * C, for the whole warpgroup.  Thread t holds the
// fragment of the ISA's accumulator layout: element i at row 16 * (t / 32) + (t % 32) / 4 + 8 * ((i / 2) % 2),
// column 8 * (i / 4) + 2 * (t % 4) + i % 2.
struct WgmmaOp {
    int n = 0, k = 0, precision = 0, scale_d = 0;
    bool mn_major_a = false, mn_major_b = false;
    unsigned long long desc_a = 0, desc_b = 0;
    std::vector<unsigned> a, b;  // a[m * k + kk], b[n * k + kk]: bits as read at issue
    std::array<std::shared_ptr<WgmmaOp>, 128> chained;
    std::array<std::vector<float>, 128> input, out;
    bool done = false;
};

inline int element_bytes_of(int precision) { return precision == 0 ? 4 : 2; }

// Runs under the warpgroup's mutex, by the first thread whose wait_group needs the op.
inline void complete(WgmmaOp& op)
{
    if (op.done) return;
    const int bytes = element_bytes_of(op.precision);
    if (read_operand(op.desc_a, op.mn_major_a, bytes, 64, op.k, "A", false) != op.a ||
        read_operand(op.desc_b, op.mn_major_b, bytes, op.n, op.k, "B", false) != op.b)
        fail("wgmma: shared memory that an in-flight wgmma.mma_async reads changed before the wgmma.wait_group "
             "covering it (a stage released, refilled or overwritten too early)");
    std::vector<float> a(op.a.size()), b(op.b.size());
    for (size_t i = 0; i < a.size(); ++i) a[i] = operand_value(op.a[i], op.precision);
    for (size_t i = 0; i < b.size(); ++i) b[i] = operand_value(op.b[i], op.precision);
    for (int t = 0; t < 128; ++t) {
        if (op.chained[t]) complete(*op.chained[t]);  // an earlier op: already done unless groups were skipped
        std::vector<float>& out = op.out[t];
        out.assign(op.n / 2, 0.0f);
        for (int i = 0; i < op.n / 2; ++i) {
            const int row = 16 * (t / 32) + (t % 32) / 4 + 8 * ((i / 2) % 2);
            const int col = 8 * (i / 4) + 2 * (t % 4) + i % 2;
            float sum = 0.0f;
            for (int kk = 0; kk < op.k; ++kk) sum += a[(size_t)row * op.k + kk] * b[(size_t)col * op.k + kk];
            float c = 0.0f;
            if (op.scale_d) c = op.chained[t] ? op.chained[t]->out[t][i] : op.input[t][i];
            out[i] = c + sum;
        }
        op.input[t].clear();
    }
    op.a.clear();
    op.b.clear();
    op.done = true;
    progress();
}

inline bool is_poison(const float* d, int count)
{
    for (int i = 0; i < count; ++i)
        if (__float_as_uint(d[i]) != 0xffffffffu) return false;
    return true;
}

inline void wgmma_fence()
{
    ThreadState& state = me();
    state.last_fence = ++state.events;
}

// d: this thread's `count` = n / 2 accumulators.  precision as operand_value; trans_a / trans_b: the ISA's
// imm-trans (1: A M-major, B N-major); scale_d 0 ignores the accumulators' input.
inline void wgmma_mma_async(float* d, int n, int precision, unsigned long long desc_a, unsigned long long desc_b,
                            int scale_d, int trans_a, int trans_b)
{
    ThreadState& state = me();
    const int count = n / 2;
    std::shared_ptr<WgmmaOp> chained;
    for (auto group = state.groups.rbegin(); !chained && group != state.groups.rend(); ++group)
        for (auto p = group->rbegin(); p != group->rend(); ++p)
            if (p->d == d) { chained = p->op; break; }
    for (auto p = state.open.rbegin(); p != state.open.rend(); ++p)
        if (p->d == d) { chained = p->op; break; }
    if (chained && chained->n != n)
        fail("wgmma.mma_async accumulates into registers that an in-flight wgmma of another shape writes");
    if (!chained) {
        const auto since = state.accessible.count(d) ? state.accessible[d] : 0ull;
        if (state.last_fence == 0 || state.last_fence < since)
            fail("wgmma.mma_async without a wgmma.fence since its accumulator registers were last accessible");
    }
    Contribution mine;
    mine.desc_a = desc_a;
    mine.desc_b = desc_b;
    mine.n = n;
    mine.precision = precision;
    mine.trans_a = trans_a;
    mine.trans_b = trans_b;
    mine.scale_d = scale_d;
    mine.chained = chained;
    if (scale_d && !chained) mine.accumulators.assign(d, d + count);
    auto build = [&](std::array<Contribution, 128>& slots) {
        const Contribution& first = slots[0];
        for (const Contribution& s : slots)
            if (s.desc_a != first.desc_a || s.desc_b != first.desc_b || s.n != first.n ||
                s.precision != first.precision || s.trans_a != first.trans_a || s.trans_b != first.trans_b ||
                s.scale_d != first.scale_d)
                fail("wgmma.mma_async: threads of the warpgroup issue different instructions or descriptors");
        auto built = std::make_shared<WgmmaOp>();
        built->n = first.n;
        built->precision = first.precision;
        built->k = 32 / element_bytes_of(first.precision);
        built->scale_d = first.scale_d;
        built->mn_major_a = first.trans_a != 0;
        built->mn_major_b = first.trans_b != 0;
        built->desc_a = first.desc_a;
        built->desc_b = first.desc_b;
        const int bytes = element_bytes_of(first.precision);
        built->a = read_operand(first.desc_a, built->mn_major_a, bytes, 64, built->k, "A", true);
        built->b = read_operand(first.desc_b, built->mn_major_b, bytes, built->n, built->k, "B", true);
        for (int t = 0; t < 128; ++t) {
            built->chained[t] = std::move(slots[t].chained);
            built->input[t] = std::move(slots[t].accumulators);
        }
        return built;
    };
    std::shared_ptr<WgmmaOp> op = collective("wgmma.mma_async", std::move(mine), build);
    std::memset(d, 0xff, sizeof(float) * count);  // not readable until wait_group
    state.open.push_back(Pending{op, d, count});
    ++state.events;
}

inline void wgmma_commit_group()
{
    ThreadState& state = me();
    state.groups.push_back(std::move(state.open));
    state.open.clear();
}

inline void wgmma_wait_group(int pending_allowed)
{
    ThreadState& state = me();
    Warpgroup& wg = my_warpgroup("wgmma.wait_group");
    const int t = (int)(thread_linear() % 128);
    while ((int)state.groups.size() > pending_allowed) {
        std::vector<Pending> group = std::move(state.groups.front());
        state.groups.pop_front();
        {
            std::lock_guard<std::mutex> lock(wg.mutex);
            for (Pending& p : group) complete(*p.op);
        }
        for (size_t i = 0; i < group.size(); ++i) {
            const Pending& p = group[i];
            bool overwritten_later = false;  // a younger op in flight writes the same registers
            for (size_t j = i + 1; j < group.size(); ++j) overwritten_later |= group[j].d == p.d;
            for (const auto& younger : state.groups)
                for (const Pending& q : younger) overwritten_later |= q.d == p.d;
            for (const Pending& q : state.open) overwritten_later |= q.d == p.d;
            if (overwritten_later) continue;
            if (!is_poison(p.d, p.count))
                fail("wgmma: accumulator registers of an in-flight wgmma.mma_async were written before the "
                     "wgmma.wait_group covering it");
            std::memcpy(p.d, p.op->out[t].data(), sizeof(float) * p.count);
            state.accessible[p.d] = ++state.events;
        }
    }
}

}  // namespace sm90
}  // namespace dlgpu_host

#include "cuda_host_tma.h"  // mbarrier and TMA, on the machinery above

// dlgpu/testing/cuda_host_tma.h -- the mbarrier and TMA models of the CPU harness (PTX ISA; sm_90).
//
// Included by cuda_host_sm90.h, whose header comment describes what is modelled and how: mbarrier phases,
// arrival and transaction counts, try_wait.parity; cp.async.bulk.tensor loads landing at the wait that
// covers them, stores written at cp.async.bulk.wait_group; the harness's own 128-byte tensor map;
// cp.async.mbarrier.arrive.noinc (a thread's cp.async copies, landing with their arrival at that wait).
#pragma once

namespace dlgpu_host {
namespace sm90 {

// ---------------------------------------------------------------- mbarrier
struct PendingLoad {
    std::vector<unsigned> addresses;  // the shared address of each 16-byte chunk
    std::vector<unsigned char> bytes;  // 16 per chunk
    unsigned transaction_bytes = 0;
};

struct MBarrier {
    unsigned long long token = 0;
    int count = 0, pending = 0;
    long long tx = 0;
    unsigned long long phase = 0;
    std::vector<PendingLoad> loads;  // TMA loads signalling this barrier, not landed yet
    // cp.async.mbarrier.arrive.noinc: per arriving thread, its cp.async copies; the arrival comes when they land.
    std::vector<std::vector<PendingCopy>> copy_arrivals;
    // mbarrier.init is an ordinary shared write: the TMA unit may signal the barrier once a fence
    // (fence.mbarrier_init, or fence.proxy.async) follows it; a peer CTA may reach it once
    // fence.mbarrier_init.release.cluster follows it and then a barrier.cluster completes.
    bool async_visible = false, cluster_fenced = false;
    unsigned long long fenced_in_cluster_phase = 0;  // the cluster barrier's phase at that fence
};

static std::mutex g_mbarrier_mutex;
static std::condition_variable g_mbarrier_cv;
static std::unordered_map<uintptr_t, std::shared_ptr<MBarrier>> g_mbarriers;
static unsigned long long g_next_token = 0x5eed000000000001ull;

inline unsigned long long stored_token(const void* bar)
{
    unsigned long long token;
    std::memcpy(&token, bar, 8);
    return token;
}

inline std::string describe(const MBarrier& b)
{
    return "phase " + std::to_string(b.phase) + " (parity " + std::to_string(b.phase & 1) + "), " +
           std::to_string(b.pending) + " of " + std::to_string(b.count) + " arrivals pending, tx-count " +
           std::to_string(b.tx) + ", " + std::to_string(b.loads.size()) + " TMA loads and " +
           std::to_string(b.copy_arrivals.size()) + " cp.async arrivals not landed";
}

// Under g_mbarrier_mutex: the barrier at `bar`, in this CTA's shared memory or (remote) a peer's.
inline MBarrier& barrier_at(void* bar, const char* what, bool remote = false)
{
    if (!remote) shared_address(bar);
    check_aligned(bar, 8, what);
    auto it = g_mbarriers.find(reinterpret_cast<uintptr_t>(bar));
    if (it == g_mbarriers.end() || it->second->token != stored_token(bar))
        fail(std::string(what) + ": no mbarrier here (used before mbarrier.init, or its 8 bytes were overwritten)");
    return *it->second;
}

inline void complete_if_done(MBarrier& b)
{
    if (b.pending == 0 && b.tx == 0) {
        ++b.phase;
        b.pending = b.count;
        g_mbarrier_cv.notify_all();
    }
    progress();
}

inline void check_tx(const MBarrier& b, const char* what)
{
    if (b.tx > (1 << 20) - 1 || b.tx < -((1 << 20) - 1))
        fail(std::string(what) + ": tx-count out of the ISA's range [-(2^20 - 1), 2^20 - 1]: " + describe(b));
}

inline void mbarrier_init(void* bar, unsigned count)
{
    if (count < 1 || count > (1u << 20) - 1)
        fail("mbarrier.init: count " + std::to_string(count) + " not in [1, 2^20 - 1]");
    std::lock_guard<std::mutex> lock(g_mbarrier_mutex);
    shared_address(bar);
    check_aligned(bar, 8, "mbarrier.init");
    auto& entry = g_mbarriers[reinterpret_cast<uintptr_t>(bar)];
    if (entry && entry->token == stored_token(bar) && (!entry->loads.empty() || !entry->copy_arrivals.empty()))
        fail("mbarrier.init on a barrier with TMA loads or cp.async arrivals in flight");
    entry = std::make_shared<MBarrier>();
    entry->token = g_next_token;
    g_next_token += 2;
    entry->count = entry->pending = (int)count;
    std::memcpy(bar, &entry->token, 8);
    progress();
}

// fence.mbarrier_init.release.cluster (`cluster`) or fence.proxy.async: the inits of this CTA's barriers so far
// become visible to the TMA unit, and with `cluster` to the peers after the next barrier.cluster.  Modelled
// CTA-wide, as the proxy fence is.
inline void publish_mbarrier_inits(bool cluster)
{
    unsigned long long phase = 0;
    if (cluster) {
        Unseen unseen;  // the model's own locking orders nothing
        std::lock_guard<std::mutex> lock(t_slot->group->mutex);
        phase = t_slot->group->barrier_phase;
    }
    std::lock_guard<std::mutex> lock(g_mbarrier_mutex);
    const uintptr_t base = reinterpret_cast<uintptr_t>(dynamic_shared());
    for (auto& [where, b] : g_mbarriers) {
        if (where < base || where >= base + g_dynamic_bytes || b->token != stored_token(reinterpret_cast<void*>(where)))
            continue;
        b->async_visible = true;
        if (cluster && !b->cluster_fenced) {
            b->cluster_fenced = true;
            b->fenced_in_cluster_phase = phase;
        }
    }
}

// Under g_mbarrier_mutex (and, for a peer's barrier, the cluster's mutex): `what` is about to signal `b`
// through the TMA unit, or (`peer`) from another CTA of the cluster.
inline void check_init_published(const MBarrier& b, bool peer, const char* what)
{
    if (!peer) {
        if (!b.async_visible)
            fail(std::string(what) + ": its mbarrier's init is not visible to the TMA unit yet (fence.mbarrier_init"
                 ".release.cluster, or fence.proxy.async, after mbarrier.init)");
        return;
    }
    if (!b.cluster_fenced)
        fail(std::string(what) + ": a peer CTA's mbarrier whose init no fence.mbarrier_init.release.cluster "
             "published to the cluster");
    if (t_slot->group->barrier_phase <= b.fenced_in_cluster_phase)
        fail(std::string(what) + ": a peer CTA's mbarrier before a barrier.cluster completed after the peer's "
             "fence.mbarrier_init (the peer may not have initialized it yet)");
}

inline void arrive_locked(MBarrier& b, const char* what)
{
    if (b.pending == 0)
        fail(std::string(what) + ": the current phase has no arrivals pending (more arrivals than the count, or a "
             "producer a phase ahead of its consumers): " + describe(b));
    --b.pending;
    complete_if_done(b);
}

inline unsigned long long mbarrier_arrive(void* bar)
{
    std::lock_guard<std::mutex> lock(g_mbarrier_mutex);
    MBarrier& b = barrier_at(bar, "mbarrier.arrive");
    const unsigned long long state = b.phase;
    arrive_locked(b, "mbarrier.arrive");
    return state;
}

inline unsigned long long mbarrier_arrive_expect_tx(void* bar, unsigned bytes)
{
    std::lock_guard<std::mutex> lock(g_mbarrier_mutex);
    MBarrier& b = barrier_at(bar, "mbarrier.arrive.expect_tx");
    const unsigned long long state = b.phase;
    b.tx += bytes;
    check_tx(b, "mbarrier.arrive.expect_tx");
    arrive_locked(b, "mbarrier.arrive.expect_tx");
    return state;
}

inline void mbarrier_expect_tx(void* bar, unsigned bytes)
{
    std::lock_guard<std::mutex> lock(g_mbarrier_mutex);
    MBarrier& b = barrier_at(bar, "mbarrier.expect_tx");
    b.tx += bytes;
    check_tx(b, "mbarrier.expect_tx");
    progress();
}

// The TMA unit finishing the loads that signal `b`: their bytes land, each completes its transactions;
// then the cp.async copies tracked by `b` land, each thread's set followed by that thread's arrival, until
// the phase completes: copies whose arrival the phase did not wait for (an init count too low) stay in
// flight, their destinations poisoned, while the waiters go on.
inline void land_loads(MBarrier& b)
{
    for (PendingLoad& load : b.loads) {
        for (size_t c = 0; c < load.addresses.size(); ++c) {
            shared_bytes(load.addresses[c], 16, "TMA load");  // the range check
            async_write(*t_slot, load.addresses[c], &load.bytes[16 * c], 16);
        }
        b.tx -= load.transaction_bytes;
    }
    b.loads.clear();
    const unsigned long long phase = b.phase;
    size_t landed = 0;
    for (; landed < b.copy_arrivals.size() && b.phase == phase; ++landed) {
        for (const PendingCopy& copy : b.copy_arrivals[landed]) store16(copy.dst, copy.bytes);
        arrive_locked(b, "cp.async.mbarrier.arrive.noinc");
    }
    b.copy_arrivals.erase(b.copy_arrivals.begin(), b.copy_arrivals.begin() + landed);
    complete_if_done(b);
}

// cp.async.mbarrier.arrive.noinc.shared::cta.b64: every cp.async this thread has issued and not yet seen
// land (committed or not) now lands with an arrival on `bar`, counted against the barrier's expected
// count (.noinc: the pending count is not raised first, so the count at init must include these
// arrivals).  They land when a thread waits on the barrier's current phase, as TMA loads do; until then
// the destinations hold poison, and a cp.async.wait_group of this thread no longer covers them.
inline void cp_async_mbarrier_arrive_noinc(void* bar)
{
    std::vector<PendingCopy> copies = std::move(t_async.open);
    t_async.open.clear();
    for (std::vector<PendingCopy>& group : t_async.committed) copies.insert(copies.end(), group.begin(), group.end());
    t_async.committed.clear();
    std::lock_guard<std::mutex> lock(g_mbarrier_mutex);
    MBarrier& b = barrier_at(bar, "cp.async.mbarrier.arrive.noinc");
    b.copy_arrivals.push_back(std::move(copies));
    progress();
}

inline bool mbarrier_try_wait_parity(void* bar, unsigned parity)
{
    // One clock per thread, restarted by every wait that succeeds: it measures a single blocked wait.
    thread_local StallClock clock;
    thread_local bool waiting = false;
    std::unique_lock<std::mutex> lock(g_mbarrier_mutex);
    MBarrier* b = &barrier_at(bar, "mbarrier.try_wait.parity");
    if ((!b->loads.empty() || !b->copy_arrivals.empty()) && (b->phase & 1) == (parity & 1)) land_loads(*b);
    if ((b->phase & 1) != (parity & 1)) {
        waiting = false;
        return true;
    }
    if (!waiting) {
        clock = StallClock{};
        waiting = true;
    }
    g_mbarrier_cv.wait_for(lock, std::chrono::milliseconds(100));
    if (g_aborted) throw Abort{};
    b = &barrier_at(bar, "mbarrier.try_wait.parity");
    if ((b->phase & 1) != (parity & 1)) {
        waiting = false;
        return true;
    }
    if (clock.stalled())
        fail("deadlock: mbarrier.try_wait.parity(" + std::to_string(parity & 1) + ") made no progress for " +
             std::to_string((int)wait_timeout_seconds()) + " s; the barrier: " + describe(*b));
    return false;
}

// ---------------------------------------------------------------- TMA: the harness's tensor map
// 128 bytes, little-endian, written by dlgpu/cuda/tma.py (host_tensor_map): the global address is
// relative to the map itself, so that a map and the tensor it describes travel in one buffer (the
// sanitizer runner copies every buffer, which would break absolute pointers).
struct HostTensorMap {
    unsigned long long magic;    // kTensorMapMagic
    long long address_offset;    // global address = (char*)this + address_offset
    unsigned rank, element_bytes;
    unsigned swizzle_bytes;      // 0, 32, 64 or 128
    unsigned nan_fill;           // out-of-bounds elements: 0 zeros, 1 NaN
    unsigned long long dims[5];  // elements, innermost first
    unsigned long long strides[4];  // bytes between consecutive indices of dims 1..rank-1
    unsigned box[5];             // elements per dimension
    unsigned reserved;
};
static_assert(sizeof(HostTensorMap) == 128, "the harness's tensor map is 128 bytes, as CUtensorMap");
constexpr unsigned long long kTensorMapMagic = 0x414d547570676c64ull;  // "dlgpuTMA"

inline const HostTensorMap& tensor_map(const void* map, int rank, const char* what)
{
    check_aligned(map, 64, what);
    const HostTensorMap& m = *static_cast<const HostTensorMap*>(map);
    if (m.magic != kTensorMapMagic)
        fail(std::string(what) + ": not a harness tensor map (encode it with dlgpu.cuda.tma for the harness)");
    if ((int)m.rank != rank)
        fail(std::string(what) + ": a " + std::to_string(rank) + "-d copy through a rank-" + std::to_string(m.rank) +
             " tensor map");
    if (m.swizzle_bytes && m.box[0] * m.element_bytes != m.swizzle_bytes)
        fail(std::string(what) + ": the box's inner extent (" + std::to_string(m.box[0] * m.element_bytes) +
             " bytes) is not the swizzle width (" + std::to_string(m.swizzle_bytes) + "; narrower boxes not modelled)");
    return m;
}

// Visits the box's elements in shared-memory order: (byte offset in the box, global element address or
// nullptr when out of bounds).
template <class Visit> inline void for_each_box_element(const HostTensorMap& m, const int* coords, Visit visit)
{
    const unsigned char* base = reinterpret_cast<const unsigned char*>(&m) + m.address_offset;
    unsigned long long total = 1;
    for (unsigned d = 0; d < m.rank; ++d) total *= m.box[d];
    for (unsigned long long linear = 0; linear < total; ++linear) {
        unsigned long long rest = linear;
        bool inside = true;
        long long offset = 0;
        for (unsigned d = 0; d < m.rank; ++d) {
            const long long index = coords[d] + (long long)(rest % m.box[d]);
            rest /= m.box[d];
            inside &= index >= 0 && index < (long long)m.dims[d];
            offset += index * (d == 0 ? (long long)m.element_bytes : (long long)m.strides[d - 1]);
        }
        visit((unsigned)(linear * m.element_bytes), inside ? base + offset : nullptr);
    }
}

inline unsigned box_bytes(const HostTensorMap& m)
{
    unsigned bytes = m.element_bytes;
    for (unsigned d = 0; d < m.rank; ++d) bytes *= m.box[d];
    return bytes;
}

// Shared destinations: 128-byte aligned, and on their swizzle pattern's boundary (8 rows of the width).
inline unsigned tma_shared_base(const void* smem, const HostTensorMap& m, const char* what)
{
    const unsigned address = shared_address(smem);
    const unsigned alignment = m.swizzle_bytes ? 8 * m.swizzle_bytes : 128;
    if (address % alignment)
        fail(std::string(what) + ": shared address " + std::to_string(address) + " is not " +
             std::to_string(alignment) + "-byte aligned");
    return address;
}

// The box at `coords` as TMA reads it from global memory, in box order.
inline std::vector<unsigned char> fetch_box(const HostTensorMap& m, const int* coords)
{
    std::vector<unsigned char> image(box_bytes(m));
    for_each_box_element(m, coords, [&](unsigned offset, const unsigned char* global) {
        if (global) std::memcpy(&image[offset], global, m.element_bytes);
        else if (m.nan_fill) std::memset(&image[offset], 0xff, m.element_bytes);
        else std::memset(&image[offset], 0, m.element_bytes);
    });
    return image;
}

// A box bound for shared address `dst` of the CTA whose dynamic shared memory is `window`, signalling
// the barrier at shared address `bar` there; it lands when a thread of that CTA waits on the barrier.
inline void enqueue_load(Slot& slot, unsigned dst, unsigned bar, const HostTensorMap& m,
                         std::vector<unsigned char> image)
{
    unsigned char* const window = slot.dynamic;
    const unsigned bytes = box_bytes(m), bits = swizzle_bits(m.swizzle_bytes);
    PendingLoad load;
    load.transaction_bytes = bytes;
    load.bytes = std::move(image);
    for (unsigned chunk = 0; chunk < bytes / 16; ++chunk) load.addresses.push_back(swizzle(dst + 16 * chunk, bits));
    std::lock_guard<std::mutex> lock(g_mbarrier_mutex);
    MBarrier& b = barrier_at(window + bar, "cp.async.bulk.tensor (its mbarrier)", true);
    check_init_published(b, &slot != t_slot, "cp.async.bulk.tensor");
    const unsigned lo = dst, hi = dst + bytes;
    // Only that CTA's barriers: other blocks running at the same time have shared memory of their own.
    const uintptr_t base = reinterpret_cast<uintptr_t>(window);
    for (auto& [where, other] : g_mbarriers) {
        if (where < base || where >= base + g_dynamic_bytes) continue;
        for (const PendingLoad& earlier : other->loads)
            for (unsigned a : earlier.addresses)
                if (a + 16 > lo && a < hi)
                    fail("cp.async.bulk.tensor: a load into shared bytes [" + std::to_string(lo) + ", " +
                         std::to_string(hi) + ") that an earlier load, not yet landed, also writes (a producer "
                         "overrunning its ring?)");
    }
    if ((size_t)hi > g_dynamic_bytes)
        fail("TMA load: shared address range [" + std::to_string(lo) + ", " + std::to_string(hi) +
             ") leaves the shared window");
    static const std::array<unsigned char, 16> poison = [] {
        std::array<unsigned char, 16> bytes;
        bytes.fill(0xff);
        return bytes;
    }();
    for (unsigned a : load.addresses) async_write(slot, a, poison.data(), 16);
    b.loads.push_back(std::move(load));
    progress();
}

inline void tma_load(void* smem_dst, const void* map, const int* coords, int rank, void* bar)
{
    const HostTensorMap& m = tensor_map(map, rank, "cp.async.bulk.tensor (load)");
    const unsigned dst = tma_shared_base(smem_dst, m, "cp.async.bulk.tensor (load)");
    enqueue_load(*t_slot, dst, shared_address(bar), m, fetch_box(m, coords));
}

struct BulkStore {
    const HostTensorMap* map;
    std::array<int, 5> coords;
    unsigned shared_base;
    std::vector<unsigned char> snapshot;  // the box as read at issue, in box order
    bool read_checked = false;
};

// At issue (`issue`), the box must read the same through the async proxy (check_async_view).
inline std::vector<unsigned char> read_box(const HostTensorMap& m, unsigned base, bool issue)
{
    const unsigned bytes = box_bytes(m), bits = swizzle_bits(m.swizzle_bytes);
    std::vector<unsigned char> image(bytes);
    std::unique_lock<std::mutex> view_lock(g_async_view_mutex, std::defer_lock);
    if (issue) view_lock.lock();
    for (unsigned chunk = 0; chunk < bytes / 16; ++chunk) {
        const unsigned address = swizzle(base + 16 * chunk, bits);
        std::memcpy(&image[16 * chunk], shared_bytes(address, 16, "TMA store"), 16);
        if (issue) check_async_view(address, 16, "cp.async.bulk.tensor (store)");
    }
    return image;
}

inline void tma_store(const void* map, const int* coords, int rank, const void* smem_src)
{
    const HostTensorMap& m = tensor_map(map, rank, "cp.async.bulk.tensor (store)");
    auto store = std::make_shared<BulkStore>();
    store->map = &m;
    for (int d = 0; d < 5; ++d) store->coords[d] = d < rank ? coords[d] : 0;
    store->shared_base = tma_shared_base(smem_src, m, "cp.async.bulk.tensor (store)");
    store->snapshot = read_box(m, store->shared_base, true);
    me().open_stores.push_back(std::move(store));
    progress();
}

inline void bulk_commit_group()
{
    ThreadState& state = me();
    state.store_groups.push_back(std::move(state.open_stores));
    state.open_stores.clear();
}

// .read: the sources of all but the newest `pending_allowed` groups may be reused; without .read the
// global writes are complete too (and happen here).
inline void bulk_wait_group(int pending_allowed, bool read_only)
{
    ThreadState& state = me();
    for (size_t g = 0; g + pending_allowed < state.store_groups.size(); ++g)
        for (auto& store : state.store_groups[g])
            if (!store->read_checked) {
                if (read_box(*store->map, store->shared_base, false) != store->snapshot)
                    fail("cp.async.bulk.tensor (store): its shared source changed before "
                         "cp.async.bulk.wait_group.read");
                store->read_checked = true;
            }
    if (read_only) return;
    while ((int)state.store_groups.size() > pending_allowed) {
        for (auto& store : state.store_groups.front()) {
            const HostTensorMap& m = *store->map;
            for_each_box_element(m, store->coords.data(), [&](unsigned offset, const unsigned char* global) {
                if (global) std::memcpy(const_cast<unsigned char*>(global), &store->snapshot[offset], m.element_bytes);
            });
        }
        state.store_groups.pop_front();
        progress();
    }
}

// ---------------------------------------------------------------- clusters
// The CTAs of a cluster run in the slots of one ClusterGroup (cuda_host.h); a CTA reaches a peer's
// shared memory at the same shared address in the peer's window.  A launch without clusters is a
// cluster of one CTA, as on the device.
inline unsigned cluster_ctarank() { return t_slot->rank; }

// The peer of rank `rank`, under its group's mutex: it must be in the cluster and not have exited.
inline Slot& cluster_peer(unsigned rank, const char* what)
{
    const ClusterGroup& group = *t_slot->group;
    if (rank >= group.members.size())
        fail(std::string(what) + ": CTA rank " + std::to_string(rank) + " is outside the cluster of " +
             std::to_string(group.members.size()));
    Slot& peer = *group.members[rank];
    if (peer.exited)
        fail(std::string(what) + ": CTA rank " + std::to_string(rank) + " of the cluster has exited, and its shared "
             "memory with it (a CTA must not exit while its peers can still reach it: barrier.cluster first)");
    return peer;
}

// mapa + mbarrier.arrive.release.cluster: an arrival on the barrier at bar's offset in CTA `rank`.
inline void mbarrier_arrive_remote(void* bar, unsigned rank)
{
    const unsigned offset = shared_address(bar);
    std::lock_guard<std::mutex> group_lock(t_slot->group->mutex);
    Slot& peer = cluster_peer(rank, "mbarrier.arrive.shared::cluster");
    std::lock_guard<std::mutex> lock(g_mbarrier_mutex);
    MBarrier& b = barrier_at(peer.dynamic + offset, "mbarrier.arrive.shared::cluster", true);
    if (&peer != t_slot) check_init_published(b, true, "mbarrier.arrive.shared::cluster");
    arrive_locked(b, "mbarrier.arrive.shared::cluster");
}

// cp.async.bulk.tensor ... .multicast::cluster: the box lands at dst's offset in every CTA of `mask`
// and completes its bytes on the barrier at bar's offset in each.
inline void tma_load_multicast(void* smem_dst, const void* map, const int* coords, int rank, void* bar, unsigned mask)
{
    const char* what = "cp.async.bulk.tensor (multicast load)";
    const HostTensorMap& m = tensor_map(map, rank, what);
    const unsigned dst = tma_shared_base(smem_dst, m, what), bar_address = shared_address(bar);
    const std::vector<unsigned char> image = fetch_box(m, coords);
    std::lock_guard<std::mutex> group_lock(t_slot->group->mutex);
    const size_t size = t_slot->group->members.size();
    if (mask == 0 || (mask >> size) != 0)
        fail(std::string(what) + ": ctaMask " + hex(mask) + " names no CTA, or CTAs outside the cluster of " +
             std::to_string(size));
    for (unsigned r = 0; r < size; ++r)
        if (mask >> r & 1) enqueue_load(cluster_peer(r, what), dst, bar_address, m, image);
}

// barrier.cluster.arrive (.release) / barrier.cluster.wait (.acquire): the phase completes when every
// thread of the cluster that has not exited has arrived.  Its waits are outside the blocks' deadlock
// accounting (the arrivals come from other blocks); one that sees no progress for the timeout fails.
inline void cluster_barrier_check(ClusterGroup& group)  // under group.mutex
{
    int live = 0;
    for (Slot* member : group.members) {
        const int threads = member->block.live_count();
        if (threads == 0 && !member->exited) return;  // a CTA between its last thread's return and its exit
        live += threads;
    }
    if (group.barrier_arrived > 0 && group.barrier_arrived >= live) {
        group.barrier_arrived = 0;
        ++group.barrier_phase;
        group.cv.notify_all();
        progress();
    }
}

inline void cluster_arrive()
{
    ThreadState& state = me();
    if (state.cluster_arrived) fail("barrier.cluster.arrive twice without barrier.cluster.wait between");
    ClusterGroup& group = *t_slot->group;
    tsan_release(&group.token);
    Unseen unseen;  // the model's own locking orders nothing
    std::lock_guard<std::mutex> lock(group.mutex);
    state.cluster_arrived = true;
    state.cluster_phase = group.barrier_phase;
    ++group.barrier_arrived;
    cluster_barrier_check(group);
}

inline void cluster_wait()
{
    ThreadState& state = me();
    if (!state.cluster_arrived) fail("barrier.cluster.wait without barrier.cluster.arrive");
    ClusterGroup& group = *t_slot->group;
    {
        Unseen unseen;
        std::unique_lock<std::mutex> lock(group.mutex);
        StallClock clock;
        while (group.barrier_phase == state.cluster_phase) {
            cluster_barrier_check(group);  // a thread may have exited since
            if (group.barrier_phase != state.cluster_phase) break;
            group.cv.wait_for(lock, std::chrono::milliseconds(5));
            if (g_aborted) throw Abort{};
            if (clock.stalled())
                fail("deadlock: barrier.cluster.wait made no progress for " +
                     std::to_string((int)wait_timeout_seconds()) + " s: " + std::to_string(group.barrier_arrived) +
                     " threads of the cluster have arrived");
        }
        state.cluster_arrived = false;
    }
    tsan_acquire(&group.token);
}

}  // namespace sm90
}  // namespace dlgpu_host

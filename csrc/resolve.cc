#include "resolve.h"

#include <algorithm>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>

#include "keys.h"
#include "reasons.h"

namespace fc {

bool append_id(const IdColumn& ids, size_t i, std::string& out) {
    if (ids.ints) {
        if (ids.ints[i] < 0) return false;
        append_int_id(out, ids.ints[i]);
        return true;
    }
    const uint64_t b = ids.offsets[i], e = ids.offsets[i + 1];
    if (b == e) return false;
    out.append(ids.text + b, e - b);
    return true;
}

namespace {

void check_ids(const AssemblyPlan& plan, size_t role, const std::vector<IdColumn>& role_ids, size_t want) {
    const RoleSpec& spec = plan.roles()[role];
    if (spec.per_request) want = 1;
    if (role_ids[role].ints == nullptr && role_ids[role].offsets == nullptr)
        throw std::invalid_argument("serve: entity '" + spec.entity_type +
                                    "' has a resident group but its ids are None; pass its ids");
    if (role_ids[role].n != want)
        throw std::invalid_argument("serve: entity '" + spec.entity_type + "' got " + std::to_string(role_ids[role].n) +
                                    " ids; it needs " + std::to_string(want) +
                                    (spec.per_request ? " (one per request)" : " (one per candidate)"));
}

// Hashes (hash_id_int / hash_id_text) and misses of every row of one role, whose
// resident groups then probe them without building keys (ResidentGroup::Probe):
// str and int ids are read where they are (int ids compare as integers, resident.h);
// a pair role's ids (pair_id text) are written to sc.role_keys, without the key prefix.
void hash_role_ids(const AssemblyPlan& plan, size_t role, std::string_view tenant, const std::vector<IdColumn>& role_ids,
                   size_t n_rows, ServeScratch& sc) {
    const RoleSpec& spec = plan.roles()[role];
    if (spec.components.empty()) check_ids(plan, role, role_ids, n_rows);
    for (uint32_t c : spec.components) check_ids(plan, c, role_ids, n_rows);
    std::string& prefix = sc.role_prefix[role];
    prefix.clear();
    append_key_prefix(prefix, tenant, spec.entity_type);
    const uint64_t ph = hash_bytes(prefix.data(), prefix.size());
    auto& hashes = sc.role_hashes[role];
    auto& miss = sc.role_miss[role];
    hashes.resize(n_rows);
    miss.resize(n_rows);
    if (spec.components.empty() && role_ids[role].ints) {
        const int64_t* ints = role_ids[role].ints;
        uint8_t* m = miss.data();
        for (size_t i = 0; i < n_rows; ++i) m[i] = ints[i] < 0 ? kNotApplicable : kPresent;  // (so never probed)
        hash_ids_int(ph, ints, n_rows, hashes.data());
        return;
    }
    const char* text;
    const uint64_t* offs;
    if (spec.components.empty()) {
        text = role_ids[role].text;
        offs = role_ids[role].offsets;
    } else {
        std::vector<IdColumn> parts;
        for (uint32_t c : spec.components) parts.push_back(role_ids[c]);
        auto& koffs = sc.role_offs[role];
        koffs.resize(n_rows + 1);
        write_keys("", parts, n_rows, sc.role_keys[role], koffs.data(), miss.data());
        text = sc.role_keys[role].data();
        offs = koffs.data();
    }
    for (size_t i = 0; i < n_rows; ++i) {
        const size_t len = offs[i + 1] - offs[i];
        if (spec.components.empty()) miss[i] = len == 0 ? kNotApplicable : kPresent;
        hashes[i] = hash_id_text(ph, text + offs[i], len);
    }
}

// The probe of a role's ids, after hash_role_ids.
ResidentGroup::Probe role_probe(const AssemblyPlan& plan, size_t role, const std::vector<IdColumn>& role_ids,
                                const ServeScratch& sc) {
    ResidentGroup::Probe p;
    p.prefix = sc.role_prefix[role];
    p.hashes = sc.role_hashes[role].data();
    if (plan.roles()[role].components.empty() && role_ids[role].ints) {
        p.ints = role_ids[role].ints;
    } else if (plan.roles()[role].components.empty()) {
        p.text = role_ids[role].text;
        p.offs = role_ids[role].offsets;
    } else {  // pair ids, written by hash_role_ids
        p.text = sc.role_keys[role].data();
        p.offs = sc.role_offs[role].data();
    }
    return p;
}

// Rows of a resident group (the follower) for ids its role's first group (the leader)
// was already probed for: through the follower's peer map of the leader's rows when it
// has a valid one (an id the leader lacks is still probed here, the follower may hold
// it, unless the map says it holds the leader's keys), else by probing every id.
// out[i] = row or -1, as find_many_locked.
void follower_rows(const ResidentGroup& leader, const int64_t* leader_refs, const ResidentGroup& follower,
                   const ResidentGroup::Probe& probe, const uint8_t* skip, size_t n, int64_t* out, ServeScratch& sc) {
    if (&leader == &follower) {
        std::copy(leader_refs, leader_refs + n, out);
        return;
    }
    const std::shared_ptr<const PeerRows> map = follower.peer_rows_locked(leader, n);
    if (!map) {
        follower.find_many_locked(probe, skip, n, out);
        return;
    }
    if (map->same_keys) {  // the leader's rows, and its misses
        std::copy(leader_refs, leader_refs + n, out);
        return;
    }
    const uint32_t* rows = map->identity ? nullptr : map->rows.data();  // identity: the leader's rows
    constexpr size_t kAhead = 16;  // map entries are random reads too
    auto& rest = sc.peer_skip;     // ids the leader lacks (and the follower may hold)
    rest.resize(n);
    bool any = false;
    for (size_t i = 0; i < n; ++i) {
        if (rows && i + kAhead < n && leader_refs[i + kAhead] >= 0) __builtin_prefetch(rows + leader_refs[i + kAhead]);
        const int64_t lr = leader_refs[i];
        if (lr >= 0) {
            const uint32_t r = rows ? rows[lr] : static_cast<uint32_t>(lr);
            out[i] = r == PeerRows::kNoRow ? -1 : static_cast<int64_t>(r);
            rest[i] = 1;
        } else {
            out[i] = -1;
            rest[i] = skip[i];
            any = any || !skip[i];
        }
    }
    if (!any) return;
    auto& found = sc.peer_out;
    found.resize(n);
    follower.find_many_locked(probe, rest.data(), n, found.data());
    for (size_t i = 0; i < n; ++i)
        if (!rest[i]) out[i] = found[i];
}

// Rows of a role for a request of n candidates (1 when every id is per-request).
size_t role_rows(const AssemblyPlan& plan, size_t role, size_t n) {
    const RoleSpec& spec = plan.roles()[role];
    if (spec.components.empty()) return spec.per_request ? 1 : n;
    for (uint32_t c : spec.components)
        if (!plan.roles()[c].per_request) return n;
    return 1;
}

}  // namespace

size_t pair_rows(const std::vector<IdColumn>& components) {
    size_t n = 1;
    for (size_t c = 0; c < components.size(); ++c) {
        const size_t m = components[c].n;
        if (m == 1) continue;
        if (n != 1 && n != m)
            throw std::invalid_argument("components[" + std::to_string(c) + "] has " + std::to_string(m) +
                                        " ids but another has " + std::to_string(n) +
                                        "; pass n ids or 1 (broadcast) each");
        n = m;
    }
    return n;
}

void write_keys(std::string_view prefix, const std::vector<IdColumn>& components, size_t n_rows,
                std::string& keys, uint64_t* offs, uint8_t* miss) {
    std::string part;
    keys.clear();
    for (size_t i = 0; i < n_rows; ++i) {
        const size_t start = keys.size();
        keys.append(prefix);
        bool ok = true;
        for (size_t c = 0; c < components.size() && ok; ++c) {
            const IdColumn& ids = components[c];
            const size_t row = ids.n == 1 ? 0 : i;
            if (c + 1 == components.size()) {
                ok = append_id(ids, row, keys);
            } else {
                part.clear();
                ok = append_id(ids, row, part);
                append_pair_component(keys, part);
            }
        }
        if (!ok) keys.resize(start);
        miss[i] = ok ? kPresent : kNotApplicable;
        offs[i] = start;
        offs[i + 1] = keys.size();
    }
}

AssembleStats serve(const AssemblyPlan& plan, std::string_view tenant, const std::vector<IdColumn>& role_ids,
                    const std::vector<GroupSource>& sources, const RequestCols& req, const Outputs& out,
                    ServeScratch& sc) {
    const int64_t t0 = now_ns();
    const size_t n = out.n;
    const auto& roles = plan.roles();
    const auto& pgroups = plan.groups();
    if (role_ids.size() != roles.size() || sources.size() != pgroups.size())
        throw std::invalid_argument("serve: got ids for " + std::to_string(role_ids.size()) + " roles and " +
                                    std::to_string(sources.size()) + " group sources; the plan has " +
                                    std::to_string(roles.size()) + " roles and " + std::to_string(pgroups.size()) + " groups");
    sc.role_keys.resize(roles.size());
    sc.role_prefix.resize(roles.size());
    sc.role_offs.resize(roles.size());
    sc.role_hashes.resize(roles.size());
    sc.role_miss.resize(roles.size());
    sc.role_absent.resize(roles.size());
    sc.refs.resize(pgroups.size());
    if (sc.iota.size() < n) {
        sc.iota.resize(n);
        for (size_t i = 0; i < n; ++i) sc.iota[i] = static_cast<int64_t>(i);
    }
    // Hash once per role, shared by every resident group of that entity.
    auto& built = sc.built;
    built.assign(roles.size(), 0);
    for (size_t g = 0; g < pgroups.size(); ++g) {
        const uint32_t role = pgroups[g].spec.role;
        if (sources[g].resident && !built[role]) {
            const size_t nr = role_rows(plan, role, n);
            hash_role_ids(plan, role, tenant, role_ids, nr, sc);
            const uint8_t* m = sc.role_miss[role].data();
            auto& absent = sc.role_absent[role];
            absent.resize(nr);
            uint8_t* a = absent.data();
            for (size_t i = 0; i < nr; ++i) a[i] = m[i] ? m[i] : static_cast<uint8_t>(kEntityNotFound);
            built[role] = 1;
        }
    }
    // Shared locks in address order, each group once, so two readers never
    // wait on each other's writers in a cycle.
    // The locks are released when serve returns, however it returns.
    struct Release {
        ServeScratch& sc;
        ~Release() { sc.locks.clear(); }
    } release{sc};
    auto& residents = sc.residents;
    residents.clear();
    for (const auto& s : sources)
        if (s.resident) residents.push_back(s.resident);
    std::sort(residents.begin(), residents.end());
    residents.erase(std::unique(residents.begin(), residents.end()), residents.end());
    for (const ResidentGroup* r : residents) sc.locks.emplace_back(r->mutex());

    auto& rows = sc.rows;
    rows.assign(pgroups.size(), GroupRows{});
    auto& leader = sc.leader;  // per role: its first resident group, probed
    leader.assign(roles.size(), -1);
    for (size_t g = 0; g < pgroups.size(); ++g) {
        const GroupSource& src = sources[g];
        GroupRows& gr = rows[g];
        const uint32_t role = pgroups[g].spec.role;
        const size_t nr = role_rows(plan, role, n);
        if (src.resident) {
            if (!src.resident->schema().same_layout(*pgroups[g].spec.schema))
                throw std::invalid_argument("serve: the resident source of group " + std::to_string(g) +
                                            " has a different schema than the plan; load it with the plan's schema");
            const auto& rmiss = sc.role_miss[role];
            auto& refs = sc.refs[g];
            refs.resize(nr);
            if (leader[role] < 0) {
                src.resident->find_many_locked(role_probe(plan, role, role_ids, sc), rmiss.data(), nr, refs.data());
                leader[role] = static_cast<int32_t>(g);
            } else {
                follower_rows(*sources[static_cast<size_t>(leader[role])].resident,
                              sc.refs[static_cast<size_t>(leader[role])].data(), *src.resident,
                              role_probe(plan, role, role_ids, sc), rmiss.data(), nr, refs.data(), sc);
            }
            gr.table = src.resident->view_locked();
            gr.refs = refs.data();
            gr.miss = sc.role_absent[role].data();
            gr.miss_stride = gr.refs_stride = nr == 1 ? 0 : 1;
        } else if (src.table) {
            if (!src.table->schema().same_layout(*pgroups[g].spec.schema))
                throw std::invalid_argument("serve: the table of group " + std::to_string(g) +
                                            " has a different schema than the plan; decode it with the plan's schema");
            if (src.table->n_rows() != nr)
                throw std::invalid_argument("serve: the table of group " + std::to_string(g) + " has " +
                                            std::to_string(src.table->n_rows()) + " rows; it needs " + std::to_string(nr) +
                                            " (row i = candidate i, or 1 for a per-request entity)");
            gr.table = src.table->view();
            gr.refs = sc.iota.data();
            gr.refs_stride = nr == 1 ? 0 : 1;
        } else {
            gr.disabled = true;
        }
    }
    const int64_t t1 = now_ns();
    AssembleStats stats = assemble(plan, rows, req, out);
    stats.resolve_ns = t1 - t0;
    return stats;
}

}  // namespace fc

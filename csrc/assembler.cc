#include "assembler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <system_error>
#include <thread>


namespace fc {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

std::string col_str(size_t c) { return std::to_string(c); }

// Marks [col, col + width) as produced once; throws on overlap or overflow.
void claim(std::vector<uint8_t>& used, size_t col, size_t width, const std::string& what) {
    if (col + width > used.size())
        throw std::invalid_argument("AssemblyPlan: " + what + " writes columns " + col_str(col) + ".." +
                                    col_str(col + width - 1) + " but the plan has " + col_str(used.size()) +
                                    " columns");
    for (size_t c = col; c < col + width; ++c) {
        if (used[c])
            throw std::invalid_argument("AssemblyPlan: column " + col_str(c) + " is written twice (" + what +
                                        "); give every column exactly one source");
        used[c] = 1;
    }
}

// Per group state of the current row.
struct RowState {
    const float* src;       // slots of the row, or nullptr
    const uint8_t* nulls;   // null bitmap of the row, or nullptr (no null in the row)
    uint8_t reason;         // row-level reason (0 = row present)
    bool stale;
    bool clean;             // present, not stale, no null: copy runs
};

inline uint8_t feature_reason(const RowState& s, uint32_t feature) {
    if (s.reason) return s.reason;
    if (s.nulls && is_null(s.nulls, feature)) return kNoHistory;
    return s.stale ? kStale : kPresent;
}

class Writer {
  public:
    Writer(const AssemblyPlan& plan, const Outputs& out, AssembleStats& stats)
        : actions_(plan.actions().data()),
          constants_(plan.constants().data()),
          f_(plan.n_columns()),
          out_(out),
          stats_(stats) {}

    void start_row(size_t i) {
        row_ = i;
        v_ = out_.values + i * f_;
        r_ = out_.reasons + i * f_;
    }
    float* values() const { return v_; }

    // Writes the default of each column in [col, col + width) for reason;
    // stale_src is the stored value when there is one (stale rows).
    void missing(uint32_t col, uint32_t width, uint8_t reason, const float* stale_src) {
        for (uint32_t j = 0; j < width; ++j) {
            const size_t c = col + j;
            float v = kNaN;
            switch (actions_[c * kNumReasons + reason]) {
                case kConstant: v = constants_[c * kNumReasons + reason]; break;
                case kUseStaleIfAvailable:
                    if (stale_src && (reason == kStale || reason == kTimeout)) v = stale_src[j];
                    break;
                case kFail:
                    if (stats_.fail_row < 0) {
                        stats_.fail_row = static_cast<int64_t>(row_);
                        stats_.fail_col = static_cast<int64_t>(c);
                        stats_.fail_reason = reason;
                    }
                    break;
                default: break;  // null_with_indicator
            }
            v_[c] = v;
            r_[c] = reason;
        }
        stats_.reason_counts[reason] += width;
    }

    // Reasons start zeroed (assemble clears the matrix), so a present cell only
    // writes its value.
    void present(uint32_t col, float v) {
        v_[col] = v;
    }

  private:
    const uint8_t* actions_;
    const float* constants_;
    size_t f_;
    const Outputs& out_;
    AssembleStats& stats_;
    size_t row_ = 0;
    float* v_ = nullptr;
    uint8_t* r_ = nullptr;
};

// dst[0, width) = src[0, width): the usual widths as fixed-size copies the compiler
// inlines (a libc call per run cost more than the copy).
inline void copy_floats(float* dst, const float* src, uint32_t width) {
    switch (width) {
        case 8: std::memcpy(dst, src, 8 * sizeof(float)); return;
        case 16: std::memcpy(dst, src, 16 * sizeof(float)); return;
        case 32: std::memcpy(dst, src, 32 * sizeof(float)); return;
        case 64: std::memcpy(dst, src, 64 * sizeof(float)); return;
        default: std::memcpy(dst, src, width * sizeof(float));
    }
}

void write_group(const AssemblyPlan::Group& g, const RowState& s, Writer& w) {
    float* v = w.values();
    if (s.clean) {
        for (const auto& run : g.runs) copy_floats(v + run.dst_col, s.src + run.src_slot, run.width);
        for (uint32_t c : g.indicator_cols) w.present(c, 0.0f);
        return;
    }
    for (const auto& m : g.maps) {
        const uint8_t reason = feature_reason(s, m.feature);
        if (reason == kPresent) {
            std::memcpy(v + m.dst_col, s.src + m.src_slot, m.width * sizeof(float));
        } else {
            const bool has_value = s.reason == kPresent && !(s.nulls && is_null(s.nulls, m.feature));
            w.missing(m.dst_col, m.width, reason, has_value ? s.src + m.src_slot : nullptr);
        }
        if (m.indicator_col >= 0) w.present(static_cast<uint32_t>(m.indicator_col), reason ? 1.0f : 0.0f);
    }
}

void write_cross(const AssemblyPlan::Cross& x, const std::vector<RowState>& states, Writer& w) {
    const RowState& sa = states[x.spec.group_a];
    const RowState& sb = states[x.spec.group_b];
    const uint8_t ra = feature_reason(sa, x.spec.feature_a);
    const uint8_t reason = ra ? ra : feature_reason(sb, x.spec.feature_b);
    if (reason) {
        w.missing(x.spec.dst_col, 1, reason, nullptr);
        return;
    }
    const float* a = sa.src + x.a_slot;
    const float* b = sb.src + x.b_slot;
    switch (x.spec.kind) {
        case kLookup: {
            const float code = b[0];
            if (!(code >= 0.0f && code < static_cast<float>(x.a_width)) || code != std::floor(code)) {
                w.missing(x.spec.dst_col, 1, kNotApplicable, nullptr);
                return;
            }
            w.present(x.spec.dst_col, a[static_cast<size_t>(code)]);
            return;
        }
        case kDot:
        case kCosine: {
            double dot = 0, na = 0, nb = 0;
            for (uint32_t j = 0; j < x.a_width; ++j) {
                dot += static_cast<double>(a[j]) * b[j];
                na += static_cast<double>(a[j]) * a[j];
                nb += static_cast<double>(b[j]) * b[j];
            }
            if (x.spec.kind == kCosine) dot = (na > 0 && nb > 0) ? dot / std::sqrt(na * nb) : 0.0;
            w.present(x.spec.dst_col, static_cast<float>(dot));
            return;
        }
    }
}

void write_request_cols(const std::vector<uint32_t>& cols, const float* src, Writer& w) {
    for (size_t j = 0; j < cols.size(); ++j) {
        const float v = src[j];
        if (std::isnan(v))
            w.missing(cols[j], 1, kNotComputed, nullptr);
        else
            w.present(cols[j], v);
    }
}

}  // namespace

AssemblyPlan::AssemblyPlan(size_t n_columns, std::vector<uint8_t> actions, std::vector<float> constants, std::vector<RoleSpec> roles,
           std::vector<GroupSpec> groups, std::vector<uint32_t> context_cols, std::vector<uint32_t> candidate_cols,
           std::vector<CrossSpec> crosses)
    : n_columns_(n_columns),
      actions_(std::move(actions)),
      constants_(std::move(constants)),
      roles_(std::move(roles)),
      context_cols_(std::move(context_cols)),
      candidate_cols_(std::move(candidate_cols)) {
    if (actions_.size() != n_columns_ * kNumReasons || constants_.size() != n_columns_ * kNumReasons)
        throw std::invalid_argument("AssemblyPlan: actions and constants must be (n_columns, 8) = (" + col_str(n_columns_) +
                                    ", 8), got " + col_str(actions_.size()) + " and " +
                                    col_str(constants_.size()) + " values");
    for (size_t i = 0; i < actions_.size(); ++i)
        if (actions_[i] >= kNumActions)
            throw std::invalid_argument("AssemblyPlan: column " + col_str(i / kNumReasons) + " has action code " +
                                        col_str(actions_[i]) + " for reason " + col_str(i % kNumReasons) +
                                        "; use 0..3 (constant, use_stale_if_available, null_with_indicator, fail)");
    for (size_t r = 0; r < roles_.size(); ++r)
        for (uint32_t c : roles_[r].components)
            if (c >= roles_.size() || !roles_[c].components.empty())
                throw std::invalid_argument("AssemblyPlan: pair role " + col_str(r) + " (" + roles_[r].entity_type +
                                            ") has component " + col_str(c) + ", which is not a plain role");
    for (const auto& r : roles_)
        if (r.components.size() == 1)
            throw std::invalid_argument("AssemblyPlan: pair role " + r.entity_type + " needs at least 2 components");
    std::vector<uint8_t> used(n_columns_, 0);
    for (size_t gi = 0; gi < groups.size(); ++gi) {
        Group g;
        g.spec = std::move(groups[gi]);
        const std::string gname = "group " + col_str(gi);
        if (!g.spec.schema) throw std::invalid_argument("AssemblyPlan: " + gname + " has no schema");
        if (g.spec.role >= roles_.size())
            throw std::invalid_argument("AssemblyPlan: " + gname + " uses role " + col_str(g.spec.role) + " but there are " +
                                        col_str(roles_.size()) + " roles");
        const RowLayout& s = *g.spec.schema;
        for (const auto& f : g.spec.features) {
            if (f.feature >= s.n_features())
                throw std::invalid_argument("AssemblyPlan: " + gname + " maps feature " + col_str(f.feature) +
                                            " but its schema has " + col_str(s.n_features()) + " features");
            const uint32_t slot = static_cast<uint32_t>(s.slot_offsets()[f.feature]);
            const uint32_t width = static_cast<uint32_t>(s.slot_offsets()[f.feature + 1]) - slot;
            claim(used, f.dst_col, width, gname + " feature " + col_str(f.feature));
            if (f.indicator_col >= 0) {
                claim(used, static_cast<size_t>(f.indicator_col), 1, gname + " indicator of feature " + col_str(f.feature));
                g.indicator_cols.push_back(static_cast<uint32_t>(f.indicator_col));
            }
            g.maps.push_back(Map{f.feature, slot, width, f.dst_col, f.indicator_col});
            if (!g.runs.empty() && g.runs.back().src_slot + g.runs.back().width == slot &&
                g.runs.back().dst_col + g.runs.back().width == f.dst_col)
                g.runs.back().width += width;
            else
                g.runs.push_back(Run{slot, f.dst_col, width});
        }
        groups_.push_back(std::move(g));
    }
    for (size_t j = 0; j < context_cols_.size(); ++j) claim(used, context_cols_[j], 1, "context value " + col_str(j));
    for (size_t j = 0; j < candidate_cols_.size(); ++j)
        claim(used, candidate_cols_[j], 1, "candidate value " + col_str(j));
    for (size_t xi = 0; xi < crosses.size(); ++xi) {
        const CrossSpec& x = crosses[xi];
        const std::string xname = "cross feature " + col_str(xi);
        if (x.kind > kCosine)
            throw std::invalid_argument("AssemblyPlan: " + xname + " has kind " + col_str(x.kind) +
                                        "; use 0 lookup, 1 dot or 2 cosine");
        auto input = [&](uint32_t g, uint32_t f, uint32_t& slot, uint32_t& width) {
            if (g >= groups_.size() || f >= groups_[g].spec.schema->n_features())
                throw std::invalid_argument("AssemblyPlan: " + xname + " reads group " + col_str(g) + " feature " +
                                            col_str(f) + ", which does not exist");
            const auto& offs = groups_[g].spec.schema->slot_offsets();
            slot = static_cast<uint32_t>(offs[f]);
            width = static_cast<uint32_t>(offs[f + 1]) - slot;
        };
        Cross c{x, 0, 0, 0, 0};
        input(x.group_a, x.feature_a, c.a_slot, c.a_width);
        input(x.group_b, x.feature_b, c.b_slot, c.b_width);
        if (x.kind == kLookup ? c.b_width != 1 : c.a_width != c.b_width)
            throw std::invalid_argument("AssemblyPlan: " + xname + " input widths " + col_str(c.a_width) + " and " +
                                        col_str(c.b_width) +
                                        " do not fit its kind (lookup: vector and one code; dot/cosine: equal)");
        claim(used, x.dst_col, 1, xname);
        crosses_.push_back(c);
    }
    for (size_t c = 0; c < n_columns_; ++c)
        if (!used[c])
            throw std::invalid_argument("AssemblyPlan: column " + col_str(c) + " has no source; map a feature, request "
                                        "value or cross feature to it");
}

namespace {

// Rows [begin, end) of assemble; missing-reason counts and the first fail go to stats.
void assemble_rows(const AssemblyPlan& plan, const std::vector<GroupRows>& groups, const RequestCols& req,
                   const Outputs& out, size_t begin, size_t end, AssembleStats& stats) {
    const auto& pgroups = plan.groups();
    const size_t G = pgroups.size();
    std::vector<RowState> states(G);
    Writer w(plan, out, stats);
    std::memset(out.reasons + begin * plan.n_columns(), kPresent, (end - begin) * plan.n_columns());
    constexpr size_t kAhead = 6;  // rows whose records are prefetched ahead of the gather
    for (size_t i = begin; i < end; ++i) {
        w.start_row(i);
        const int64_t t = req.eval_time[i * req.eval_stride];
        if (i + kAhead < end) {
            for (const GroupRows& in : groups) {
                if (in.disabled || in.refs_stride == 0) continue;
                const int64_t ahead = in.refs[i + kAhead];
                if (ahead < 0) continue;
                const uint8_t* rec = in.table.record(static_cast<size_t>(ahead));
                for (size_t b = 0; b < in.table.span; b += 64) __builtin_prefetch(rec + b);
            }
        }
        for (size_t g = 0; g < G; ++g) {
            const GroupRows& in = groups[g];
            RowState& s = states[g];
            if (!in.disabled && pgroups[g].indicator_cols.empty()) {
                // The common case first: a present row with no null, not stale (status and
                // any-null are adjacent head bytes, read as one): copy its runs.
                const int64_t ref = in.refs[i * in.refs_stride];
                if (ref >= 0) {
                    const uint8_t* rec = in.table.record(static_cast<size_t>(ref));
                    uint16_t status_nulls;
                    std::memcpy(&status_nulls, rec + 8, sizeof status_nulls);
                    int64_t generated_at, age_us;
                    std::memcpy(&generated_at, rec, sizeof generated_at);
                    const int64_t sla = pgroups[g].spec.sla_us;
                    if (status_nulls == 0 && !__builtin_sub_overflow(t, generated_at, &age_us) && !(sla > 0 && age_us > sla)) {
                        const float* src = reinterpret_cast<const float*>(rec + in.table.slots_offset);
                        s = RowState{src, nullptr, kPresent, false, true};
                        out.group_age[i * G + g] = static_cast<float>(static_cast<double>(age_us) * 1e-6);
                        float* v = w.values();
                        for (const auto& run : pgroups[g].runs) copy_floats(v + run.dst_col, src + run.src_slot, run.width);
                        continue;
                    }
                }
            }
            s = RowState{nullptr, nullptr, kPrivacyDisabled, false, false};
            float age = kNaN;
            if (!in.disabled) {
                const int64_t ref = in.refs[i * in.refs_stride];
                if (ref < 0) {
                    s.reason = in.miss[i * in.miss_stride];
                } else if (in.table.status(static_cast<size_t>(ref)) != kPresent) {
                    s.reason = in.table.status(static_cast<size_t>(ref));
                } else {
                    const size_t r = static_cast<size_t>(ref);
                    int64_t age_us;  // generated_at comes from stored bytes: saturate, never overflow
                    if (__builtin_sub_overflow(t, in.table.generated_at(r), &age_us))
                        age_us = t >= 0 ? INT64_MAX : INT64_MIN;
                    const int64_t sla = pgroups[g].spec.sla_us;
                    s.src = in.table.slots(r);
                    s.nulls = in.table.any_null(r) ? in.table.nulls_of(r) : nullptr;  // (may have no bitmap)
                    s.reason = kPresent;
                    s.stale = sla > 0 && age_us > sla;
                    s.clean = !s.stale && !in.table.any_null(r);
                    age = static_cast<float>(static_cast<double>(age_us) * 1e-6);
                }
            }
            out.group_age[i * G + g] = age;
            write_group(pgroups[g], s, w);
        }
        if (!plan.context_cols().empty()) write_request_cols(plan.context_cols(), req.context + i * req.context_stride, w);
        if (!plan.candidate_cols().empty())
            write_request_cols(plan.candidate_cols(), req.candidate + i * plan.candidate_cols().size(), w);
        for (const auto& x : plan.crosses()) write_cross(x, states, w);
    }
}

}  // namespace

namespace {

// assemble() over n_chunks > 1 chunks of rows, one thread each (offline batches).
void assemble_chunks(const AssemblyPlan& plan, const std::vector<GroupRows>& groups, const RequestCols& req,
                     const Outputs& out, size_t n_chunks, AssembleStats& stats) {
    std::vector<AssembleStats> parts(n_chunks);
    std::vector<std::thread> workers;
    size_t c = 1;
    try {
        for (; c < n_chunks; ++c)
            workers.emplace_back(assemble_rows, std::cref(plan), std::cref(groups), std::cref(req), std::cref(out),
                                 out.n * c / n_chunks, out.n * (c + 1) / n_chunks, std::ref(parts[c]));
    } catch (const std::system_error&) {
        // No thread for the remaining chunks: assemble them here instead of terminating.
    }
    for (size_t rest = c; rest < n_chunks; ++rest)
        assemble_rows(plan, groups, req, out, out.n * rest / n_chunks, out.n * (rest + 1) / n_chunks, parts[rest]);
    assemble_rows(plan, groups, req, out, 0, out.n / n_chunks, parts[0]);
    for (auto& t : workers) t.join();
    for (const AssembleStats& part : parts) {  // chunks are in row order: the first fail wins
        for (int r = 1; r < kNumReasons; ++r) stats.reason_counts[r] += part.reason_counts[r];
        if (stats.fail_row < 0 && part.fail_row >= 0) {
            stats.fail_row = part.fail_row;
            stats.fail_col = part.fail_col;
            stats.fail_reason = part.fail_reason;
        }
    }
}

}  // namespace

AssembleStats assemble(const AssemblyPlan& plan, const std::vector<GroupRows>& groups, const RequestCols& req,
                       const Outputs& out, int threads) {
    constexpr size_t kMinRowsPerThread = 16384;  // below this a thread costs more than it saves
    const int64_t t0 = now_ns();
    const size_t n_chunks =
        std::max<size_t>(1, std::min<size_t>(static_cast<size_t>(std::max(threads, 1)), out.n / kMinRowsPerThread));
    AssembleStats stats;
    if (n_chunks == 1)  // a request: on this thread, nothing allocated
        assemble_rows(plan, groups, req, out, 0, out.n, stats);
    else
        assemble_chunks(plan, groups, req, out, n_chunks, stats);
    uint64_t missing = 0;
    for (int r = 1; r < kNumReasons; ++r) missing += stats.reason_counts[r];
    stats.reason_counts[kPresent] = out.n * plan.n_columns() - missing;
    stats.assemble_ns = now_ns() - t0;
    return stats;
}

}  // namespace fc

// Named stage durations (load, preprocess, encode, prompt, segment, postprocess, frame) for the latency
// readout and the benchmark's `RAPSAM_BENCH {json}` lines, one per stage, that `rapsam-bench ios --app` reads
// from the app's console (xcrun simctl launch --console / xcrun devicectl ... --console). The line format is
// the Kotlin core's (StageTimer.kt), read by rapsam/bench/schema.py (parse_app_lines); its golden sample is
// tests/data/bench/app_bench_lines.txt:
//
//   RAPSAM_BENCH {<context>..., "latency_ms": {"max", "mean", "min", "p50", "p90", "p99"}, "runs": N,
//                 "stage": "encode", "status": "ok"}        one per stage, keys sorted, times in ms
//   RAPSAM_BENCH {<context>..., "reason": "...", "status": "failed"}       a run that could not finish
//
// The context is what the app knows about the run: platform, device, os, simulator, cores, artifact, backend,
// runtime, model, precision, input_size [h, w], image, image_size [h, w], warmup.

import Foundation

public final class StageTimer {
    public static let marker = "RAPSAM_BENCH"

    /// p50/p90/p99 (linear interpolation, as numpy's default and rapsam/bench/schema.py), mean, min, max in ms.
    public struct Summary: Equatable {
        public var runs: Int
        public var p50: Double
        public var p90: Double
        public var p99: Double
        public var mean: Double
        public var min: Double
        public var max: Double
    }

    private let lock = NSLock()  // the camera queue records while the UI reads
    private var samples: [String: [Double]] = [:]
    private var order: [String] = []

    public init() {}

    public func record(_ stage: String, ms: Double) {
        lock.lock()
        defer { lock.unlock() }
        if samples[stage] == nil { order.append(stage) }
        samples[stage, default: []].append(ms)
    }

    /// Runs `body` and records its wall-clock time under `stage` (a run that throws is not recorded).
    @discardableResult
    public func time<T>(_ stage: String, _ body: () throws -> T) rethrows -> T {
        let start = DispatchTime.now().uptimeNanoseconds
        let value = try body()
        record(stage, ms: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
        return value
    }

    /// Stages in the order they were first recorded.
    public var stages: [String] {
        lock.lock()
        defer { lock.unlock() }
        return order
    }

    public func samples(_ stage: String) -> [Double] {
        lock.lock()
        defer { lock.unlock() }
        return samples[stage] ?? []
    }

    public func last(_ stage: String) -> Double? { samples(stage).last }

    public func reset() {
        lock.lock()
        defer { lock.unlock() }
        samples = [:]
        order = []
    }

    public func summary(_ stage: String) -> Summary? { Self.summarize(samples(stage)) }

    public static func summarize(_ samples: [Double]) -> Summary? {
        guard !samples.isEmpty else { return nil }
        let ordered = samples.sorted()
        func percentile(_ q: Double) -> Double {
            let position = Double(ordered.count - 1) * q
            let low = Int(position)
            let high = Swift.min(low + 1, ordered.count - 1)
            return ordered[low] + (ordered[high] - ordered[low]) * (position - Double(low))
        }
        return Summary(runs: ordered.count, p50: percentile(0.5), p90: percentile(0.9), p99: percentile(0.99),
                       mean: ordered.reduce(0, +) / Double(ordered.count), min: ordered[0], max: ordered[ordered.count - 1])
    }

    /// One `RAPSAM_BENCH {json}` line per recorded stage: `context` plus stage, status "ok", runs and latency_ms.
    public func benchLines(context: [String: Any]) -> [String] {
        stages.compactMap { stage -> String? in
            let values = samples(stage)
            guard let s = Self.summarize(values) else { return nil }
            func ms(_ value: Double) -> Double { (value * 1e4).rounded() / 1e4 }  // 0.1 us, as the Kotlin core
            var record = context
            record["stage"] = stage
            record["status"] = "ok"
            record["runs"] = s.runs
            record["latency_ms"] = ["p50": ms(s.p50), "p90": ms(s.p90), "p99": ms(s.p99), "mean": ms(s.mean),
                                    "min": ms(s.min), "max": ms(s.max)]
            return Self.benchLine(record)
        }
    }

    /// The one line of a run that failed: `context` plus status "failed" and the `reason`.
    public static func failedLine(reason: String, context: [String: Any]) -> String {
        var record = context
        record["status"] = "failed"
        record["reason"] = reason
        return benchLine(record) ?? "\(marker) {\"reason\":\"unprintable context\",\"status\":\"failed\"}"
    }

    /// The marker and `record` as compact JSON, keys sorted at every level; nil if it is not JSON-serializable.
    public static func benchLine(_ record: [String: Any]) -> String? {
        guard JSONSerialization.isValidJSONObject(record),
              let data = try? JSONSerialization.data(withJSONObject: record, options: [.sortedKeys]) else { return nil }
        return "\(marker) \(String(decoding: data, as: UTF8.self))"
    }
}

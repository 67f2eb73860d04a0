import CoreML
import CoreVideo
import Foundation

public enum BenchError: Error, CustomStringConvertible {
    case unknownComputeUnits(String)
    case unknownEntryPoint(String)
    case missingInput(String)
    case needsIOS18(String)
    case pixelBuffer(CVReturn)

    public var description: String {
        switch self {
        case .unknownComputeUnits(let name):
            return "unknown compute units \(name); use ALL, CPU_ONLY, CPU_AND_GPU or CPU_AND_NE"
        case .unknownEntryPoint(let entry):
            return "entry point \(entry) is not in the manifest"
        case .missingInput(let name):
            return "the model has no input \(name), which the manifest names"
        case .needsIOS18(let function):
            return "function \(function) of a multifunction package needs iOS 18 / macOS 15 and Xcode 16"
        case .pixelBuffer(let status):
            return "CVPixelBufferCreate failed with \(status)"
        }
    }
}

/// One entry point's line, `RAPSAM_BENCH {json}`: rapsam/bench/ios.py reads it.
public struct EntryResult: Encodable {
    public var entryPoint: String
    public var computeUnits: String
    public var status = "ok"
    public var reason: String?
    public var warmup = 0
    public var compileMs: Double?
    public var loadMs: Double?
    public var firstMs: Double?  // the first prediction after loading
    public var latenciesMs: [Double] = []  // the timed predictions, in order
    public var device = DeviceInfo.model
    public var os = DeviceInfo.os
    public var platform = DeviceInfo.platform
    public var simulator = DeviceInfo.isSimulator
    public var processorCount = ProcessInfo.processInfo.processorCount

    public func line() throws -> String {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = .sortedKeys
        return Bench.marker + " " + String(decoding: try encoder.encode(self), as: UTF8.self)
    }
}

public enum Bench {
    public static let marker = "RAPSAM_BENCH"

    /// Compile, load, one first prediction, `warmup` untimed and `runs` timed predictions; an error becomes a
    /// failed result with its reason, so that one entry point cannot stop the others.
    public static func measure(entry: String, artifact: URL, manifest: Manifest, config: BenchConfig) -> EntryResult {
        var result = EntryResult(entryPoint: entry, computeUnits: config.computeUnits)
        do {
            try run(entry: entry, artifact: artifact, manifest: manifest, config: config, into: &result)
        } catch {
            result.status = "failed"
            result.reason = (error as? BenchError)?.description ?? error.localizedDescription
        }
        return result
    }

    static func run(entry: String, artifact: URL, manifest: Manifest, config: BenchConfig,
                    into result: inout EntryResult) throws {
        guard let spec = manifest.entryPoints[entry] else {
            throw BenchError.unknownEntryPoint(entry)
        }
        let configuration = MLModelConfiguration()
        configuration.computeUnits = try computeUnits(config.computeUnits)
        if let function = spec.method {
            try select(function: function, in: configuration)
        }
        let package = artifact.appendingPathComponent(spec.file)
        let (compiled, compileMs) = try timed { try MLModel.compileModel(at: package) }
        defer { try? FileManager.default.removeItem(at: compiled) }
        let (model, loadMs) = try timed { try MLModel(contentsOf: compiled, configuration: configuration) }
        let inputs = try Inputs.make(for: spec, model: model)
        let (_, firstMs) = try timed { try model.prediction(from: inputs) }
        for _ in 0..<config.warmup {
            _ = try model.prediction(from: inputs)
        }
        result.latenciesMs = try (0..<config.runs).map { _ in try timed { try model.prediction(from: inputs) }.1 }
        result.compileMs = compileMs
        result.loadMs = loadMs
        result.firstMs = firstMs
        result.warmup = config.warmup
    }

    static func computeUnits(_ name: String) throws -> MLComputeUnits {
        switch name {
        case "ALL": return .all
        case "CPU_ONLY": return .cpuOnly
        case "CPU_AND_GPU": return .cpuAndGPU
        case "CPU_AND_NE": return .cpuAndNeuralEngine
        default: throw BenchError.unknownComputeUnits(name)
        }
    }

    /// The function of a multifunction package (rapsam-convert's iOS18 target) to load.
    static func select(function: String, in configuration: MLModelConfiguration) throws {
        #if compiler(>=6.0)
        if #available(iOS 18.0, macOS 15.0, *) {
            configuration.functionName = function
            return
        }
        #endif
        throw BenchError.needsIOS18(function)
    }

    /// The value of `body` and the milliseconds it took.
    static func timed<T>(_ body: () throws -> T) rethrows -> (T, Double) {
        let start = DispatchTime.now().uptimeNanoseconds
        let value = try body()
        return (value, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
    }
}

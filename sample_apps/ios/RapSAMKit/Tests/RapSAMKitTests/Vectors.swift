// The test vectors of `rapsam-vectors --out DIR` (rapsam/vectors.py), read from $RAPSAM_VECTORS: vectors.json,
// raw little-endian float32 / int32 .bin tensors and PNGs (photos, clip frames, 8-bit segment maps, 0/255
// prompt masks).

import Foundation
import XCTest
@testable import RapSAMKit

struct VectorTensor: Decodable {
    let file: String
    let shape: [Int]
    let dtype: String
}

struct VectorLetterbox: Decodable {
    let imageSize: [Int]
    let validSize: [Int]
    let inputSize: [Int]

    var box: Letterbox {
        Letterbox(imageH: imageSize[0], imageW: imageSize[1], validH: validSize[0], validW: validSize[1],
                  inputH: inputSize[0], inputW: inputSize[1])
    }
}

struct VectorSegmentInfo: Decodable {
    let id: Int
    let classId: Int
    let className: String
    let isThing: Bool
    let score: Double
    let area: Int
}

struct VectorSegmentOutputs: Decodable {
    let maskLogits: VectorTensor
    let classLogits: VectorTensor
    let queries: VectorTensor
}

struct VectorPanoptic: Decodable {
    let segmentMap: String
    let segments: [VectorSegmentInfo]
}

struct VectorPrompt: Decodable {
    struct Inputs: Decodable {
        let boxes: VectorTensor
        let kinds: VectorTensor
    }

    struct Outputs: Decodable {
        let maskLogits: VectorTensor
        let iou: VectorTensor
    }

    let points: [[Double]]
    let boxes: [[Double]]
    let inputs: Inputs
    let outputs: Outputs
    let masks: [String]
    let iou: [Double]
}

struct VectorPhoto: Decodable {
    struct Encode: Decodable {
        let features: VectorTensor
    }

    let name: String
    let image: String
    let letterbox: VectorLetterbox
    let input: VectorTensor
    let segment: VectorSegmentOutputs
    let panoptic: VectorPanoptic
    let encode: Encode
    let prompt: VectorPrompt
}

struct VectorFrame: Decodable {
    let image: String
    let segmentMap: String
    let segments: [VectorSegmentInfo]
    /// The frame's raw `segment` outputs (vectors written before they were stored lack them).
    let segment: VectorSegmentOutputs?
    let instanceIds: [Int]

    var panoptic: VectorPanoptic { VectorPanoptic(segmentMap: segmentMap, segments: segments) }
}

struct VectorsDocument: Decodable {
    struct Clip: Decodable {
        let frames: [VectorFrame]
    }

    let schemaVersion: Int
    let source: String
    let runtime: String
    let inputSize: [Int]
    let promptSlots: Int?
    let precision: String
    let photos: [VectorPhoto]
    let clip: Clip
}

final class Vectors {
    let folder: URL
    let doc: VectorsDocument
    /// The artifact's manifest when there is one: $RAPSAM_MANIFEST, else the vectors' source folder.
    let manifest: Manifest?

    private static var cached: Vectors?

    /// The vectors of $RAPSAM_VECTORS; the test is skipped (not failed) when it is not set.
    static func load() throws -> Vectors {
        if let cached { return cached }
        guard let path = ProcessInfo.processInfo.environment["RAPSAM_VECTORS"], !path.isEmpty else {
            throw XCTSkip("RAPSAM_VECTORS is not set: write vectors with `rapsam-vectors --out DIR` (or "
                + "`rapsam-convert ... --vectors`) and run `RAPSAM_VECTORS=DIR swift test`")
        }
        let folder = URL(fileURLWithPath: path)
        let json = folder.appendingPathComponent("vectors.json")
        guard FileManager.default.fileExists(atPath: json.path) else {
            throw XCTSkip("\(json.path) not found: write vectors with `rapsam-vectors --out \(path)`")
        }
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase  // vectors.json has no free-form dictionary keys
        let doc = try decoder.decode(VectorsDocument.self, from: Data(contentsOf: json))
        XCTAssertEqual(doc.schemaVersion, 1, "vectors schema")
        var manifest: Manifest?
        if let path = ProcessInfo.processInfo.environment["RAPSAM_MANIFEST"], !path.isEmpty {
            let url = URL(fileURLWithPath: path)
            manifest = try url.pathExtension == "json" ? Manifest.decode(Data(contentsOf: url)) : Manifest.load(folder: url)
        } else if FileManager.default.fileExists(atPath: URL(fileURLWithPath: doc.source).appendingPathComponent("manifest.json").path) {
            manifest = try Manifest.load(folder: URL(fileURLWithPath: doc.source))
        }
        let vectors = Vectors(folder: folder, doc: doc, manifest: manifest)
        cached = vectors
        return vectors
    }

    private init(folder: URL, doc: VectorsDocument, manifest: Manifest?) {
        self.folder = folder
        self.doc = doc
        self.manifest = manifest
    }

    private func bytes(_ tensor: VectorTensor) throws -> (Data, Int) {
        let data = try Data(contentsOf: folder.appendingPathComponent(tensor.file))
        let count = tensor.shape.reduce(1, *)
        XCTAssertEqual(data.count, count * 4, "\(tensor.file): size and shape disagree")
        return (data, min(count, data.count / 4))
    }

    func floats(_ tensor: VectorTensor) throws -> [Float] {
        XCTAssertEqual(tensor.dtype, "float32", tensor.file)
        let (data, count) = try bytes(tensor)
        return data.withUnsafeBytes { raw in
            (0..<count).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
        }
    }

    func ints(_ tensor: VectorTensor) throws -> [Int32] {
        XCTAssertEqual(tensor.dtype, "int32", tensor.file)
        let (data, count) = try bytes(tensor)
        return data.withUnsafeBytes { raw in
            (0..<count).map { Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self)) }
        }
    }

    func image(_ file: String) throws -> RGBAImage {
        try RGBAImage(contentsOf: folder.appendingPathComponent(file))
    }

    func gray(_ file: String) throws -> (width: Int, height: Int, values: [UInt8]) {
        try RGBAImage.grayPixels(contentsOf: folder.appendingPathComponent(file))
    }

    func segmentOutputs(_ entry: VectorSegmentOutputs) throws -> SegmentOutputs {
        SegmentOutputs(maskLogits: FloatTensor(values: try floats(entry.maskLogits), shape: entry.maskLogits.shape),
                       classLogits: FloatTensor(values: try floats(entry.classLogits), shape: entry.classLogits.shape),
                       queries: FloatTensor(values: try floats(entry.queries), shape: entry.queries.shape))
    }

    var numClasses: Int { doc.photos[0].segment.classLogits.shape[2] - 1 }

    /// is_thing per class: the manifest's; else what the stored segments say (a class never painted in the
    /// reference cannot change the merge's result as long as the port paints no segment of it either).
    var isThing: [Bool] {
        if let manifest { return manifest.isThing }
        var flags = [Bool](repeating: false, count: numClasses)
        let segments = doc.photos.flatMap(\.panoptic.segments) + doc.clip.frames.flatMap(\.segments)
        for segment in segments where segment.classId < flags.count { flags[segment.classId] = segment.isThing }
        return flags
    }

    /// The letterbox's pad value: the manifest's; else read back from a stored input's bottom-right pixel
    /// where a photo was padded; else the built-in models' pixel mean.
    var padValue: [Float] {
        if let manifest { return manifest.normalization.padValue }
        for photo in doc.photos {
            let box = photo.letterbox.box
            guard box.validH < box.inputH || box.validW < box.inputW, let input = try? floats(photo.input) else { continue }
            let plane = box.inputH * box.inputW
            return (0..<3).map { input[$0 * plane + plane - 1] }
        }
        return [123.675, 116.28, 103.53]
    }
}

// MARK: comparisons shared by the tests

func maskIoU(_ a: [Bool], _ b: [Bool]) -> Double {
    var intersection = 0, union = 0
    for (x, y) in zip(a, b) {
        if x && y { intersection += 1 }
        if x || y { union += 1 }
    }
    return union == 0 ? 1 : Double(intersection) / Double(union)
}

/// A stored panoptic entry (segment map PNG + segments) against a Swift merge result: pixel agreement of the
/// maps >= 0.999, the same segments (id, class, thing) with areas within 0.5 % and scores within 2e-6.
func comparePanoptic(_ vectors: Vectors, _ label: String, _ entry: VectorPanoptic, _ result: PanopticResult,
                     file: StaticString = #filePath, line: UInt = #line) throws {
    let stored = try vectors.gray(entry.segmentMap)
    XCTAssertEqual(result.segmentMap.count, stored.values.count, "\(label): map size", file: file, line: line)
    let same = zip(result.segmentMap, stored.values).filter { Int($0.0) == Int($0.1) }.count
    let agreement = Double(same) / Double(max(1, stored.values.count))
    XCTAssertGreaterThanOrEqual(agreement, 0.999, "\(label): segment map agreement", file: file, line: line)
    XCTAssertEqual(result.segments.count, entry.segments.count, "\(label): segment count", file: file, line: line)
    for (got, want) in zip(result.segments, entry.segments) {
        XCTAssertEqual(got.id, want.id, "\(label): segment id", file: file, line: line)
        XCTAssertEqual(got.classId, want.classId, "\(label): segment \(want.id) class", file: file, line: line)
        XCTAssertEqual(got.isThing, want.isThing, "\(label): segment \(want.id) is_thing", file: file, line: line)
        let relative = Double(abs(got.area - want.area)) / Double(max(1, want.area))
        XCTAssertLessThanOrEqual(relative, 0.005, "\(label): segment \(want.id) area \(got.area) vs \(want.area)",
                                 file: file, line: line)
        XCTAssertEqual(Double(got.score), want.score, accuracy: 2e-6, "\(label): segment \(want.id) score",
                       file: file, line: line)
    }
}

// Manifest decoding: a real manifest of `rapsam-convert --target coreml` (the built-in demo model; its
// per-op counts and spec check left out), an ExecuTorch-style one, and $RAPSAM_MANIFEST when it is set.

import Foundation
import XCTest
@testable import RapSAMKit

final class ManifestTests: XCTestCase {
    static let coreml = #"""
        {
          "classes": [
            {"color": [120, 149, 203], "id": 0, "is_thing": true, "name": "circle"},
            {"color": [214, 238, 52], "id": 1, "is_thing": true, "name": "square"},
            {"color": [177, 67, 221], "id": 2, "is_thing": true, "name": "triangle"},
            {"color": [149, 249, 199], "id": 3, "is_thing": true, "name": "star"},
            {"color": [53, 98, 195], "id": 4, "is_thing": false, "name": "sky"},
            {"color": [235, 212, 105], "id": 5, "is_thing": false, "name": "grass"},
            {"color": [182, 91, 145], "id": 6, "is_thing": false, "name": "water"},
            {"color": [48, 64, 242], "id": 7, "is_thing": false, "name": "wall"}
          ],
          "entry_points": {
            "encode": {"file": "encode.mlpackage", "inputs": [{"dtype": "float32", "name": "image", "shape": [1, 3, 128, 128]}], "method": null, "outputs": [{"dtype": "float32", "name": "features", "shape": [1, 128, 32, 32]}]},
            "panoptic": {"file": "panoptic.mlpackage", "inputs": [{"dtype": "float32", "name": "features", "shape": [1, 128, 32, 32]}], "method": null, "outputs": [{"dtype": "float32", "name": "mask_logits", "shape": [1, 20, 32, 32]}, {"dtype": "float32", "name": "class_logits", "shape": [1, 20, 9]}, {"dtype": "float32", "name": "queries", "shape": [1, 20, 128]}]},
            "prompt": {"file": "prompt.mlpackage", "inputs": [{"dtype": "float32", "name": "features", "shape": [1, 128, 32, 32]}, {"dtype": "float32", "name": "boxes", "shape": [1, 4, 4]}, {"dtype": "int32", "name": "kinds", "shape": [1, 4]}], "method": null, "outputs": [{"dtype": "float32", "name": "mask_logits", "shape": [1, 4, 32, 32]}, {"dtype": "float32", "name": "iou", "shape": [1, 4]}]},
            "segment": {"file": "segment.mlpackage", "inputs": [{"dtype": "float32", "name": "image", "shape": [1, 3, 128, 128]}], "method": null, "outputs": [{"dtype": "float32", "name": "mask_logits", "shape": [1, 20, 32, 32]}, {"dtype": "float32", "name": "class_logits", "shape": [1, 20, 9]}, {"dtype": "float32", "name": "queries", "shape": [1, 20, 128]}]}
          },
          "input_size": [128, 128],
          "model": {"backbone": "edgenext_xx_small", "hidden_dim": 128, "name": "rapsam_edgenext_demo", "num_queries": 20, "random_init": false, "weights": "sha256:5780b71af6e52ce2a403931db8f8363ebba59190d879fdcee108c1aee2ab43a3"},
          "no_object_index": 8,
          "normalization": {"channel_order": "RGB", "in_graph": true, "input_range": [0, 255], "mean": [123.675, 116.28, 103.53], "network_channel_order": "RGB", "pad_value": [123.675, 116.28, 103.53], "resize": "keep aspect ratio, bilinear, pad bottom/right", "std": [58.395, 57.12, 57.375]},
          "parity": null,
          "precision": {"compute": "fp16", "quantization": null},
          "prompts": {"click_half_size": 3.0, "kinds": {"box": 1, "click": 0, "padding": -1}, "max_prompts": 4},
          "schema_version": 1,
          "target": {"compute_units": "ALL", "deployment_target": "iOS17", "format": "mlprogram", "image_input": false, "multifunction": false, "name": "coreml", "options": {"compute_units": "ALL", "deployment_target": "iOS17", "image_input": false}, "runtimes": ["Core ML (iOS, iPadOS, macOS, visionOS)"]},
          "taxonomy": "shapes",
          "thresholds": {"mask_logit": 0.0, "object_mask": 0.8, "overlap": 0.8},
          "versions": {"coremltools": "9.0", "python": "3.11.7", "rapsam": "0.1.0", "torch": "2.13.0+cpu"}
        }
        """#

    func testDecodesACoreMLManifest() throws {
        let manifest = try Manifest.decode(Data(Self.coreml.utf8))
        XCTAssertEqual(manifest.model.name, "rapsam_edgenext_demo")
        XCTAssertEqual(manifest.model.numQueries, 20)
        XCTAssertEqual(manifest.target.name, "coreml")
        XCTAssertEqual(manifest.target.computeUnits, "ALL")
        XCTAssertEqual(manifest.target.imageInput, false)
        XCTAssertEqual(manifest.precision.compute, "fp16")
        XCTAssertNil(manifest.precision.quantization)
        XCTAssertEqual(manifest.precisionLabel, "fp16")
        XCTAssertEqual(manifest.inputSize, [128, 128])
        XCTAssertEqual(manifest.normalization.padValue, [123.675, 116.28, 103.53])
        XCTAssertEqual(manifest.classes.map(\.name), ["circle", "square", "triangle", "star", "sky", "grass", "water", "wall"])
        XCTAssertEqual(manifest.isThing, [true, true, true, true, false, false, false, false])
        XCTAssertEqual(manifest.classes[2].color, [177, 67, 221])
        XCTAssertEqual(manifest.pipelineThresholds, Thresholds(objectMask: 0.8, overlap: 0.8, maskLogit: 0))
        XCTAssertEqual(manifest.promptSlots, 4)
        XCTAssertEqual(Set(manifest.entryPoints.keys), ["encode", "panoptic", "prompt", "segment"])
        let segment = try manifest.entryPoint("segment")
        XCTAssertEqual(segment.file, "segment.mlpackage")
        XCTAssertNil(segment.method)
        XCTAssertEqual(segment.inputs.map(\.name), ["image"])
        XCTAssertEqual(segment.input("image")?.shape, [1, 3, 128, 128])
        XCTAssertEqual(segment.outputs.map(\.name), ["mask_logits", "class_logits", "queries"])
        XCTAssertEqual(segment.output("class_logits")?.shape, [1, 20, 9])
        let prompt = try manifest.entryPoint("prompt")
        XCTAssertEqual(prompt.inputs.map(\.dtype), ["float32", "float32", "int32"])
        XCTAssertThrowsError(try manifest.entryPoint("track"))
    }

    func testDecodesMethodsAndQuantization() throws {
        let json = #"""
        {"schema_version": 1, "model": {"name": "m", "backbone": "b", "weights": "w"},
         "target": {"name": "executorch", "backend": "xnnpack"}, "input_size": [64, 96],
         "normalization": {"pad_value": [1, 2, 3]}, "classes": [{"id": 0, "name": "a", "is_thing": false, "color": [1, 2, 3]}],
         "thresholds": {"object_mask": 0.5, "overlap": 0.7, "mask_logit": 0.25},
         "precision": {"compute": "fp32", "quantization": {"scheme": "int8-dynamic"}},
         "entry_points": {"encode": {"file": "model.pte", "method": "encode",
           "inputs": [{"name": "image", "shape": [1, 3, 64, 96], "dtype": "float32", "meaning": "..."}],
           "outputs": [{"name": "features", "shape": [1, 8, 16, 24], "dtype": "float32", "meaning": "..."}]}}}
        """#
        let manifest = try Manifest.decode(Data(json.utf8))
        XCTAssertEqual(manifest.entryPoints["encode"]?.method, "encode")
        XCTAssertEqual(manifest.precisionLabel, "int8-dynamic")
        XCTAssertNil(manifest.promptSlots, "no prompt entry point: no slots")
        XCTAssertNil(manifest.target.computeUnits)
        XCTAssertEqual(manifest.pipelineThresholds, Thresholds(objectMask: 0.5, overlap: 0.7, maskLogit: 0.25))
        XCTAssertThrowsError(try Manifest.decode(Data(json.replacingOccurrences(of: "\"schema_version\": 1", with: "\"schema_version\": 2").utf8)))
        XCTAssertThrowsError(try Manifest.decode(Data(json.replacingOccurrences(of: "\"is_thing\": false, ", with: "").utf8)))
    }

    /// A manifest of your own: RAPSAM_MANIFEST=<artifact folder or its manifest.json>.
    func testDecodesTheManifestOfRAPSAM_MANIFEST() throws {
        guard let path = ProcessInfo.processInfo.environment["RAPSAM_MANIFEST"] else {
            throw XCTSkip("RAPSAM_MANIFEST is not set (an artifact folder of rapsam-convert, or its manifest.json)")
        }
        let url = URL(fileURLWithPath: path)
        let manifest = try url.pathExtension == "json" ? Manifest.decode(Data(contentsOf: url)) : Manifest.load(folder: url)
        XCTAssertEqual(manifest.classes.map(\.id), Array(0..<manifest.classes.count))
        for entry in manifest.entryPoints.values { XCTAssertFalse(entry.inputs.isEmpty) }
        if let slots = manifest.promptSlots { XCTAssertGreaterThan(slots, 0) }
    }
}

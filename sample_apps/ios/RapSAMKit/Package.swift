// swift-tools-version:5.9
// RapSAMKit: the model-independent app pipeline of RAP-SAM (a port of rapsam/pipeline.py, line for line the
// same as sample_apps/web/src/pipeline.js) with its Core ML back end, and, opt-in, the ExecuTorch back end.
//
//   swift test                                   # the unit tests; vector tests need RAPSAM_VECTORS=<dir>
//   RAPSAM_EXECUTORCH=1 swift build              # adds the ExecuTorch back end (target RapSAMKitExecuTorch)
//
// ExecuTorch is opt-in so that the package resolves and builds without fetching it (its binary frameworks are
// large) and keeps iOS 16 / macOS 13; ExecuTorch itself needs iOS 17 / macOS 14. Pick its release with
// RAPSAM_EXECUTORCH_BRANCH (default swiftpm-1.0.0): use the swiftpm-<version> branch of the ExecuTorch that
// exported the .pte (`pip show executorch`).
import Foundation
import PackageDescription

let environment = ProcessInfo.processInfo.environment
let withExecuTorch = environment["RAPSAM_EXECUTORCH"] == "1"
let executorchBranch = environment["RAPSAM_EXECUTORCH_BRANCH"] ?? "swiftpm-1.0.0"

var products: [Product] = [.library(name: "RapSAMKit", targets: ["RapSAMKit"])]
var dependencies: [Package.Dependency] = []
var targets: [Target] = [
    .target(name: "RapSAMKit"),
    // The test vectors are read from $RAPSAM_VECTORS at test time (rapsam-vectors --out <dir>), not bundled.
    .testTarget(name: "RapSAMKitTests", dependencies: ["RapSAMKit"]),
]

if withExecuTorch {
    dependencies.append(.package(url: "https://github.com/pytorch/executorch.git", branch: executorchBranch))
    products.append(.library(name: "RapSAMKitExecuTorch", targets: ["RapSAMKitExecuTorch"]))
    targets.append(.target(
        name: "RapSAMKitExecuTorch",
        dependencies: [
            "RapSAMKit",
            .product(name: "executorch", package: "executorch"),
            // rapsam-convert's backends: xnnpack (default), coreml, portable (in kernels_optimized's fallback)
            .product(name: "backend_xnnpack", package: "executorch"),
            .product(name: "backend_coreml", package: "executorch"),
            .product(name: "kernels_optimized", package: "executorch"),
            .product(name: "kernels_quantized", package: "executorch"),
        ],
        // Backends and kernels register themselves from static initializers: keep every object file.
        linkerSettings: [.unsafeFlags(["-Wl,-all_load"])]
    ))
}

let package = Package(
    name: "RapSAMKit",
    // iOS 16 / macOS 13: MLModel.compileModel(at:) async, MLComputeUnits.cpuAndNeuralEngine, PhotosPicker
    platforms: withExecuTorch ? [.iOS(.v17), .macOS(.v14)] : [.iOS(.v16), .macOS(.v13)],
    products: products,
    dependencies: dependencies,
    targets: targets
)

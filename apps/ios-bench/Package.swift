// swift-tools-version:5.9
// The on-device half of `rapsam-bench ios`: a test that times each entry point of a Core ML artifact of
// rapsam-convert. `rapsam-bench ios` copies the artifact and bench.json into Tests/RapsamBenchTests/Resources
// of a scratch copy of this package and runs `xcodebuild test`; docs/bench-devices.md says how to run it by hand.
import PackageDescription

let package = Package(
    name: "RapsamBench",
    platforms: [.iOS(.v16), .macOS(.v13)],  // MLComputeUnits.cpuAndNeuralEngine
    products: [.library(name: "RapsamBench", targets: ["RapsamBench"])],
    targets: [
        .target(name: "RapsamBench"),
        .testTarget(
            name: "RapsamBenchTests",
            dependencies: ["RapsamBench"],
            resources: [.copy("Resources")]  // copied as is: the test compiles the .mlpackage itself
        ),
    ]
)

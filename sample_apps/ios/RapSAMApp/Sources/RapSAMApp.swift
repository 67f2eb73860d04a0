// RAP-SAM on iOS: panoptic segmentation of the camera with track ids, and point / box prompts on a photo,
// with the artifacts of rapsam-convert (Core ML by default, ExecuTorch when built in). Launched with
// -benchmark it times the pipeline instead and exits (Benchmark.swift).

import SwiftUI

@main
struct RapSAMApp: App {
    private let benchmark = BenchmarkOptions.parse(ProcessInfo.processInfo.arguments)

    var body: some Scene {
        WindowGroup {
            if let benchmark {
                BenchmarkView(options: benchmark)
            } else {
                ContentView()
            }
        }
    }
}

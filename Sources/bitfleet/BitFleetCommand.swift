import ArgumentParser
import BitFleetEngine
import Foundation
import Logging

@main
struct BitFleetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bitfleet",
        abstract: "Binary mixture-of-experts inference on CPUs, drained from a PostgreSQL job queue, metered in euros.",
        subcommands: [
            MigrateCommand.self, WorkerCommand.self, EnqueueCommand.self, BatchCommand.self, StatusCommand.self,
            CostCommand.self, ModelCommand.self, BenchCommand.self, DemoCommand.self,
        ]
    )

    static func main() {
        if let problem = CPUFeatures.unsupportedMessage() {
            FileHandle.standardError.write(Data("bitfleet: \(problem)\n".utf8))
            Self.exit(withError: ExitCode(70))
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = ProcessInfo.processInfo.environment["BITFLEET_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
            return handler
        }
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            exit(withError: error)
        }
    }
}

import Foundation

// Usage: bitfleet-embed-sql OUTPUT.swift MIGRATIONS_DIRECTORY
// Writes `let embeddedMigrations: [(name: String, sql: String)]` with each *.sql file's text (sorted by name)
// as a raw string literal.
let arguments = Array(CommandLine.arguments.dropFirst())
guard arguments.count == 2 else {
    FileHandle.standardError.write(Data("usage: bitfleet-embed-sql OUTPUT.swift MIGRATIONS_DIRECTORY\n".utf8))
    exit(2)
}
let (output, directory) = (arguments[0], arguments[1])
let names = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".sql") }.sorted()
var source = "// Generated from Migrations/*.sql by the EmbedMigrations plugin. Do not edit.\n"
source += "let embeddedMigrations: [(name: String, sql: String)] = [\n"
for name in names {
    let sql = try String(contentsOfFile: directory + "/" + name, encoding: .utf8)
    // A raw string delimiter longer than any run of '#' in the file keeps the SQL verbatim.
    var hashes = "#"
    while sql.contains("\"" + hashes) || sql.contains(hashes + "\"") { hashes += "#" }
    source += "    (name: \(hashes)\"\(name)\"\(hashes), sql: \(hashes)\"\"\"\n\(sql)\n\"\"\"\(hashes)),\n"
}
source += "]\n"
try source.write(toFile: output, atomically: true, encoding: .utf8)

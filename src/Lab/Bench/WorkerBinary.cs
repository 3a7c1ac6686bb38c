using ProxyPlanes.Sandboxed;

namespace ProxyPlanes.Bench;

/// <summary>
/// The worker a benchmark or soak starts (<see cref="BenchWorker"/>): the published native AOT build, as the daemon
/// ships (<c>dotnet publish src/BenchWorker -c Release -o DIR</c>), or the JIT build next to the lab. Chosen by
/// <c>--worker</c>, else <c>PROXYPLANES_BENCH_WORKER</c>, else the JIT build. The worker itself reports what it ran on
/// (<see cref="BenchResult.Runtime"/>), so the results say so whatever the choice was.
/// </summary>
internal sealed record WorkerBinary(string File, string[] Prefix)
{
    /// <summary>The environment's choice when <c>--worker</c> is not given (scripts/test.sh sets it to the published worker).</summary>
    public const string Variable = "PROXYPLANES_BENCH_WORKER";

    /// <summary>The value that names the JIT build next to the lab.</summary>
    public const string Jit = "jit";

    public const string OptionDescription =
        $"The worker to measure in: a folder holding a published {BenchWorker.Name} (native AOT, as the daemon ships: dotnet publish src/BenchWorker -c Release -o DIR), " +
        $"that binary, or '{Jit}' for the JIT build next to the lab (default: ${Variable}, else {Jit})";

    /// <summary>
    /// The worker <paramref name="option"/> (the <c>--worker</c> value, null when not given) names; a
    /// <see cref="UsageException"/> with one line when it names nothing runnable.
    /// </summary>
    public static WorkerBinary Resolve(string? option)
    {
        var (source, value) = option is not null ? ("--worker", option) : (Variable, Environment.GetEnvironmentVariable(Variable) ?? "");
        if (value.Length == 0 || value == Jit)
        {
            var (file, prefix) = ProxyProcess.Executable(BenchWorker.Name);
            return new WorkerBinary(file, prefix);
        }
        var path = Path.GetFullPath(Directory.Exists(value) ? Path.Combine(value, BenchWorker.Name) : value);
        if (!System.IO.File.Exists(path))
            throw new UsageException($"{source}={value}: no {BenchWorker.Name} there (publish it: dotnet publish src/BenchWorker -c Release -o DIR; or '{Jit}')");
        if (Path.GetFileName(path) != BenchWorker.Name) throw new UsageException($"{source}={value}: not a {BenchWorker.Name} binary");
        return new WorkerBinary(path, []);
    }

    /// <summary>What the progress line says before the first worker has reported its runtime.</summary>
    public override string ToString() => string.Join(' ', [File, .. Prefix]);
}

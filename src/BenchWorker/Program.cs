using System.Text.Json;
using ProxyPlanes;
using ProxyPlanes.Bench;

// proxyplanes-bench-worker --settings=JSON: one measurement (BenchWorker) or soak (SoakWorker) in the node
// namespace the lab made; the one JSON result on stdout, progress and logs on stderr. Started by the lab only.
const string Prefix = "--settings=";
if (args is not [{ } argument] || !argument.StartsWith(Prefix, StringComparison.Ordinal))
{
    Console.Error.WriteLine($"{BenchWorker.Name}: usage: {BenchWorker.Name} --settings=JSON (started by proxyplanes-lab bench and soak)");
    return 2;
}
WorkerSettings? settings;
try
{
    settings = JsonSerializer.Deserialize(argument[Prefix.Length..], BenchJsonContext.Default.WorkerSettings);
}
catch (JsonException e)
{
    settings = null;
    Console.Error.WriteLine($"{BenchWorker.Name}: --settings: {e.Message}");
}
if (settings is null) return 2;
using var stop = new CancellationTokenSource();
using var terminate = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });
using var interrupt = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGINT, c => { c.Cancel = true; stop.Cancel(); });
try
{
    return await BenchWorker.RunAsync(settings, stop.Token);
}
catch (UsageException e)
{
    // The mode cannot run on this kernel (the lab checks first; this is the worker's own one line).
    Console.Error.WriteLine($"{BenchWorker.Name}: {e.Message}");
    return 2;
}
catch (OperationCanceledException) when (stop.IsCancellationRequested)
{
    Console.Error.WriteLine($"{BenchWorker.Name}: stopped");
    return 130;
}

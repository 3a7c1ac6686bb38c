using System.CommandLine;
using ProxyPlanes.Bench;
using ProxyPlanes.Demo;
using ProxyPlanes.Sandboxed;

// proxyplanes-lab: what runs the daemon in a sandbox of network namespaces (the demo) and measures
// the data planes (the benchmark). The daemon binary, proxyplanes, does neither.
var root = new RootCommand("ProxyPlanes lab: the demo, the benchmark and the soak, in sandboxes of network namespaces (root)");
root.Subcommands.Add(DemoCommand.Create());
root.Subcommands.Add(BenchCommand.Create());
root.Subcommands.Add(SoakCommand.Create());
root.Subcommands.Add(LocalProbeCommand.Create());

var parsed = root.Parse(args);
if (parsed.Errors.Count > 0)
{
    Console.Error.WriteLine($"{ProxyProcess.Lab}: {parsed.Errors[0].Message} (see {ProxyProcess.Lab} --help)");
    return 2;
}
// On SIGINT/SIGTERM the actions' token is cancelled; give them time to clean up (the demo removes
// its namespaces) instead of the default 2 s after which the process is ended mid-cleanup.
return await parsed.InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = TimeSpan.FromSeconds(30) });

using System.CommandLine;
using ProxyPlanes;
using ProxyPlanes.NodeTools;
using ProxyPlanes.Sources.Manifests;

var flags = new ProxyFlags();
var root = new RootCommand("ProxyPlanes: a Kubernetes service proxy with interchangeable data planes (iptables, nftables, ipvs, ebpf)");
var run = new Command("run", "Run the proxy (the default command)");
flags.AddTo(run);
flags.AddTo(root);

var cleanup = new Command("cleanup", "Remove every rule and object a mode installed");
var cleanupMode = new Option<string>("--mode") { Description = "The mode whose state to remove", DefaultValueFactory = _ => "iptables" };
var cleanupVerbosity = new Option<int>("--v") { Description = "Log verbosity", DefaultValueFactory = _ => 2 };
cleanup.Options.Add(cleanupMode);
cleanup.Options.Add(cleanupVerbosity);

root.Subcommands.Add(run);
root.Subcommands.Add(cleanup);

run.SetAction((result, _) => Guard(() => RunCommand.RunAsync(flags.Bind(result))));
root.SetAction((result, _) => Guard(() => RunCommand.RunAsync(flags.Bind(result))));
cleanup.SetAction((result, token) => Guard(() => CleanupCommand.RunAsync(result.GetValue(cleanupMode)!, result.GetValue(cleanupVerbosity), token)));

var parsed = root.Parse(args);
if (parsed.Errors.Count > 0)
{
    Console.Error.WriteLine($"proxyplanes: {parsed.Errors[0].Message} (see proxyplanes --help)");
    return 2;
}
// On SIGINT/SIGTERM the actions' token is cancelled; give them time to finish (run stops its loops
// and servers, cleanup finishes its restore) instead of the default 2 s after which the process is ended.
return await parsed.InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = TimeSpan.FromSeconds(30) });

// Bad input becomes one line naming the problem and a non-zero exit, not a stack trace.
static async Task<int> Guard(Func<Task<int>> action)
{
    try
    {
        return await action();
    }
    catch (UsageException e)
    {
        Console.Error.WriteLine($"proxyplanes: {e.Message}");
        return 2;
    }
    catch (ProxyPlanes.Sources.Kubernetes.KubernetesConfigException e)
    {
        Console.Error.WriteLine($"proxyplanes: {e.Message}");
        return 1;
    }
    catch (ManifestException e)
    {
        Console.Error.WriteLine($"proxyplanes: {e.Message}");
        return 1;
    }
    catch (CommandException e)
    {
        Console.Error.WriteLine($"proxyplanes: {e.Message}");
        return 1;
    }
}

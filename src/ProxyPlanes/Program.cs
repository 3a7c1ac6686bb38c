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
flags.AddCleanupTo(cleanup);

var explain = new Command("explain", "Ask the kernel what happens to a packet: the service port it matches, its verdict and endpoints (run on the node)");
var explainProtocol = new Argument<string?>("PROTO") { Description = "tcp, udp or sctp", Arity = ArgumentArity.ZeroOrOne };
var explainAddress = new Argument<string?>("IP:PORT") { Description = "The destination: a cluster IP, node address, external or load-balancer IP, and port ([IPv6]:PORT)", Arity = ArgumentArity.ZeroOrOne };
var explainFrom = new Option<string?>("--from") { Description = "The packet's source address (default: a client off the node and off the cluster)" };
var explainMode = new Option<string?>("--mode") { Description = "The mode whose kernel state to read (default: the one present)" };
var explainOutput = new Option<string>("--output", "-o") { Description = "text or json", DefaultValueFactory = _ => "text" };
var explainAll = new Option<bool>("--all") { Description = "Every frontend the kernel holds, with its service port, verdict and endpoints" };
explain.Arguments.Add(explainProtocol);
explain.Arguments.Add(explainAddress);
explain.Options.Add(explainFrom);
explain.Options.Add(explainMode);
explain.Options.Add(explainOutput);
var explainStateUrl = new Option<string?>("--state-url")
{
    Description = $"With --all: the daemon's desired state to compare the kernel with (default {DaemonState.DefaultUrl}; \"\" skips the comparison)",
    // --state-url="" reaches us as "--state-url=", with no value: that is the empty URL, not a missing one.
    Arity = ArgumentArity.ZeroOrOne,
};
explain.Options.Add(explainAll);
explain.Options.Add(explainStateUrl);

root.Subcommands.Add(run);
root.Subcommands.Add(cleanup);
root.Subcommands.Add(explain);

run.SetAction((result, _) => Guard(() => RunCommand.RunAsync(flags.Bind(result))));
root.SetAction((result, _) => Guard(() => RunCommand.RunAsync(flags.Bind(result))));
cleanup.SetAction((result, token) => Guard(() => CleanupCommand.RunAsync(result.GetValue(cleanupMode)!, flags.BindCleanup(result), result.GetValue(cleanupVerbosity), token)));
explain.SetAction((result, token) => Guard(() => ExplainCommand.RunAsync(result.GetValue(explainProtocol), result.GetValue(explainAddress), result.GetValue(explainFrom),
    result.GetValue(explainMode), result.GetValue(explainOutput)!, result.GetValue(explainAll),
    result.GetResult(explainStateUrl) is { } stateUrl ? stateUrl.Tokens.FirstOrDefault()?.Value ?? "" : null, Console.Out, token)));

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
    catch (ProxyPlanes.DataPlane.ExplainException e)
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

// Runs the real iptables planner on a 10,000-service × 2-endpoint state (ClusterIP services, as the
// lab bench's SyntheticCluster makes them): one full plan, then partial plans that each change one
// service's endpoints, and prints the median and p90 render time of the partial plans.
using System.Diagnostics;
using ProxyPlanes.Backends.Iptables;
using ProxyPlanes.Backends.Nftables.Tests;
using ProxyPlanes.Iptables;
using ProxyPlanes.Model;

var services = args.Length > 0 ? int.Parse(args[0]) : 10_000;
var changes = args.Length > 1 ? int.Parse(args[1]) : 200;
ServicePortState Service(int i, int generation) =>
    StateBuilder.Port(StateBuilder.Info($"svc-{i:D6}", $"10.{96 + i / 65536}.{i / 256 % 256}.{i % 256}"),
        StateBuilder.Endpoint($"10.244.{(i * 2 + generation) / 256 % 256}.{(i * 2 + generation) % 256}", local: false),
        StateBuilder.Endpoint($"10.245.{(i * 2 + generation) / 256 % 256}.{(i * 2 + generation) % 256}", local: false));
var state = StateBuilder.State(null, Enumerable.Range(0, services).Select(i => Service(i, 0)).ToArray());
var planner = new IptablesPlanner(IpFamily.IPv4);
var clock = Stopwatch.StartNew();
var plan = planner.Plan(StateBuilder.Full(state), null, KernelTables.Empty);
Console.WriteLine($"full plan: {clock.Elapsed.TotalMilliseconds:F1} ms, script {plan.Script.Length / 1024} KiB");
var random = new Random(1);
var times = new List<double>();
var bytes = 0L;
for (var c = 0; c < changes; c++)
{
    var i = random.Next(services);
    var port = Service(i, c + 1);
    state = state with { ServicePorts = state.ServicePorts.SetItem(port.Name, port) };
    var before = GC.GetAllocatedBytesForCurrentThread();
    clock.Restart();
    plan = planner.Plan(StateBuilder.Partial(state, port.Name), plan.State, KernelTables.Empty);
    times.Add(clock.Elapsed.TotalMilliseconds);
    bytes += GC.GetAllocatedBytesForCurrentThread() - before;
}
times.Sort();
Console.WriteLine($"partial plan ({changes} one-service changes at {services} services): p50 {times[times.Count / 2]:F3} ms, p90 {times[times.Count * 9 / 10]:F3} ms, max {times[^1]:F3} ms, allocated {bytes / changes / 1024} KiB per plan; last script {plan.Script.Length} bytes");

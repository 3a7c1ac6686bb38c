using ProxyPlanes.Backends.Nftables.Tests;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Ipvs.Tests;

/// <summary>
/// The totals a partial sync keeps instead of walking every virtual server and entry
/// (<see cref="KernelTotals"/>, <see cref="IpvsPlannerState.SetSizes"/>) must equal a count of the
/// whole state and of the in-memory kernel after every sync of long random sequences, with
/// destinations draining (connections set on random destinations) and finishing their drain.
/// </summary>
public sealed class IncrementalTotalsTests
{
    private static readonly IpFamily[] Families = [IpFamily.IPv4, IpFamily.IPv6];

    public static IEnumerable<object[]> Seeds() => Enumerable.Range(1, 16).Select(i => new object[] { i });

    [Theory]
    [MemberData(nameof(Seeds))]
    public async Task RandomSequence_KeptTotals_EqualACountOfTheStateAndTheKernel(int seed)
    {
        var random = new Random(seed);
        var cluster = new RandomCluster(seed);
        var kernel = new FakeIpvsKernel(IpvsPlannerGoldenTests.NodeIPs);
        var planner = new IpvsPlanner(new IpvsPlannerOptions { Families = Families, GracefulTerminationTimeout = TimeSpan.FromMinutes(5) });
        IpvsPlannerState? state = null;
        DesiredState? previous = null;
        var drainingSeen = 0;

        for (var step = 0; step < 80; step++)
        {
            // Open or end connections on some destinations, so removed ones drain, or go at once.
            foreach (var (key, server) in (await kernel.ReadAsync(Families, default)).Services)
                foreach (var destination in server.Destinations)
                    if (random.Next(3) == 0) kernel.SetConnections(key, destination.Key, random.Next(2), 0);

            cluster.Mutate();
            var desired = cluster.State(StateBuilder.Network);
            var full = previous is null || step % 23 == 0;
            var request = full ? StateBuilder.Full(desired) : new SyncRequest(desired, false, StateBuilder.Changed(previous!, desired));
            var plan = await PartialSyncEquivalenceTests.SyncAsync(planner, kernel, request, state, IpvsPlannerGoldenTests.Now.AddMinutes(step));
            state = plan.State;
            previous = desired;

            // Kept == counted from the state.
            var counted = KernelTotals.Of(state.Kernel);
            Assert.True(counted.Destinations == state.Totals.Destinations, $"seed {seed} step {step}: destinations kept {state.Totals.Destinations}, counted {counted.Destinations}");
            Assert.True(counted.Draining == state.Totals.Draining, $"seed {seed} step {step}: draining kept {state.Totals.Draining}, counted {counted.Draining}");
            Assert.True(counted.DrainingServers.SetEquals(state.Totals.DrainingServers), $"seed {seed} step {step}: draining servers differ");
            Assert.Equal(IpvsPlannerState.SizesOf(state.Entries).OrderBy(p => p.Key, StringComparer.Ordinal), state.SetSizes.OrderBy(p => p.Key, StringComparer.Ordinal));

            // Kept == what the kernel holds.
            var view = await kernel.ReadAsync(Families, default);
            var destinations = view.Services.Values.SelectMany(s => s.Destinations).ToList();
            Assert.Equal(destinations.Count, plan.Destinations);
            Assert.Equal(destinations.Count(d => d.Weight == 0), plan.State.DrainingCount);
            Assert.Equal(view.Services.Count, plan.VirtualServers);
            foreach (var definition in IpvsNames.Sets.Where(s => s != IpvsNames.ServiceNames))
                foreach (var family in Families)
                    Assert.True(view.Ipsets[definition.Name(family)].Count == state.SetSizes.GetValueOrDefault(definition.Name(family)),
                        $"seed {seed} step {step}: {definition.Name(family)} holds {view.Ipsets[definition.Name(family)].Count} entries, kept size {state.SetSizes.GetValueOrDefault(definition.Name(family))}");
            drainingSeen += state.Totals.Draining;
        }

        // The draining bookkeeping was exercised, not only the empty case.
        Assert.True(drainingSeen > 0, $"seed {seed}: no destination ever drained");
    }
}

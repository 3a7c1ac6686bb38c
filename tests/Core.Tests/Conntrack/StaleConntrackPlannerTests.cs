using System.Net;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;
using ProxyPlanes.NodeTools.Conntrack;
using static ProxyPlanes.Core.Tests.Conntrack.ConntrackTestStates;

namespace ProxyPlanes.Core.Tests.Conntrack;

public sealed class StaleConntrackPlannerTests
{
    private static readonly ServicePortName Dns = Name("dns");
    private static readonly IPAddress Vip = IPAddress.Parse("10.96.0.10");
    private static readonly IPAddress Ep1 = IPAddress.Parse("10.244.1.2");
    private static readonly IPAddress Ep2 = IPAddress.Parse("10.244.1.3");

    [Fact]
    public void Plan_UdpEndpointRemoved_DeletesItsFlowsByReplySource()
    {
        var previous = State(Port(Dns, ["10.96.0.10"], ["10.244.1.2:8053", "10.244.1.3:8053"]));
        var current = State(Port(Dns, ["10.96.0.10"], ["10.244.1.3:8053"]));

        var plan = StaleConntrackPlanner.Plan(previous, current);

        var deletion = Assert.Single(plan);
        Assert.Equal(new ConntrackDeletion(Dns, ConntrackDeletionReason.EndpointRemoved, Protocol.UDP, IpFamily.IPv4, Vip, 53, Ep1, 8053), deletion);
        Assert.False(deletion.IsWholeFrontend);
    }

    [Fact]
    public void Plan_EndpointPortChanged_CountsAsRemoved()
    {
        var previous = State(Port(Dns, ["10.96.0.10"], ["10.244.1.2:8053"]));
        var current = State(Port(Dns, ["10.96.0.10"], ["10.244.1.2:9053"]));

        var deletion = Assert.Single(StaleConntrackPlanner.Plan(previous, current));

        Assert.Equal((Ep1, 8053), (deletion.ReplySource, deletion.ReplySourcePort));
    }

    [Fact]
    public void Plan_TcpEndpointRemoved_PlansNothing()
    {
        var web = Name("web", Protocol.TCP, "http");
        var previous = State(Port(web, ["10.96.0.10"], ["10.244.1.2:8080", "10.244.1.3:8080"], port: 80, nodePort: 30080));
        var current = State(Port(web, ["10.96.0.10"], ["10.244.1.3:8080"], port: 80, nodePort: 30080));

        Assert.Empty(StaleConntrackPlanner.Plan(previous, current));
        Assert.Empty(StaleConntrackPlanner.Plan(previous, DesiredState.Empty));
        Assert.Empty(StaleConntrackPlanner.Plan(State(Port(web, ["10.96.0.10"], [], port: 80)), current));
    }

    [Fact]
    public void Plan_SctpEndpointRemoved_DeletesLikeUdp()
    {
        var sig = Name("sig", Protocol.SCTP, "sctp");
        var previous = State(Port(sig, ["10.96.0.20"], ["10.244.1.2:3868"], port: 3868));
        var current = State(Port(sig, ["10.96.0.20"], ["10.244.1.3:3868"], port: 3868));

        var deletion = Assert.Single(StaleConntrackPlanner.Plan(previous, current));

        Assert.Equal(Protocol.SCTP, deletion.Protocol);
        Assert.Equal(Ep1, deletion.ReplySource);
    }

    [Fact]
    public void Plan_NoEndpointsToSome_DeletesEveryFrontendWhole()
    {
        var previous = State(Port(Dns, ["10.96.0.10"], [], nodePort: 30053, externalIPs: ["192.0.2.7"], loadBalancerIPs: ["198.51.100.9"]));
        var current = State(Port(Dns, ["10.96.0.10"], ["10.244.1.2:8053"], nodePort: 30053, externalIPs: ["192.0.2.7"], loadBalancerIPs: ["198.51.100.9"]));

        var plan = StaleConntrackPlanner.Plan(previous, current);

        Assert.Equal(
            [
                (IPAddress.Parse("10.96.0.10"), 53),
                (IPAddress.Parse("192.0.2.7"), 53),
                (IPAddress.Parse("198.51.100.9"), 53),
                ((IPAddress?)null, 30053),
            ],
            plan.Select(d => (d.OriginalDestination, d.OriginalDestinationPort)));
        Assert.All(plan, d =>
        {
            Assert.True(d.IsWholeFrontend);
            Assert.Equal(ConntrackDeletionReason.ServiceNewlyActive, d.Reason);
            Assert.Equal(IpFamily.IPv4, d.Family);
        });
    }

    [Fact]
    public void Plan_NewServiceWithEndpoints_DeletesItsFrontends()
    {
        var current = State(Port(Dns, ["10.96.0.10"], ["10.244.1.2:8053"]));

        var deletion = Assert.Single(StaleConntrackPlanner.Plan(DesiredState.Empty, current));

        Assert.Equal(new ConntrackDeletion(Dns, ConntrackDeletionReason.ServiceNewlyActive, Protocol.UDP, IpFamily.IPv4, Vip, 53), deletion);
    }

    [Fact]
    public void Plan_ServiceStillWithoutEndpoints_PlansNothing()
    {
        var previous = State(Port(Dns, ["10.96.0.10"], []));

        Assert.Empty(StaleConntrackPlanner.Plan(DesiredState.Empty, previous));
        Assert.Empty(StaleConntrackPlanner.Plan(previous, previous));
    }

    [Fact]
    public void Plan_ServiceRemoved_DeletesEveryFrontendWholeAndNoEndpointFlows()
    {
        var previous = State(Port(Dns, ["10.96.0.10"], ["10.244.1.2:8053", "10.244.1.3:8053"], nodePort: 30053, externalIPs: ["192.0.2.7"]));

        var plan = StaleConntrackPlanner.Plan(previous, DesiredState.Empty);

        Assert.Equal(
            [
                new ConntrackDeletion(Dns, ConntrackDeletionReason.FrontendRemoved, Protocol.UDP, IpFamily.IPv4, Vip, 53),
                new ConntrackDeletion(Dns, ConntrackDeletionReason.FrontendRemoved, Protocol.UDP, IpFamily.IPv4, IPAddress.Parse("192.0.2.7"), 53),
                new ConntrackDeletion(Dns, ConntrackDeletionReason.FrontendRemoved, Protocol.UDP, IpFamily.IPv4, null, 30053),
            ],
            plan);
    }

    [Fact]
    public void Plan_EndpointRemoved_CoversNodePortExternalAndLoadBalancerFrontends()
    {
        var previous = State(Port(Dns, ["10.96.0.10"], ["10.244.1.2:8053", "10.244.1.3:8053"], nodePort: 30053, externalIPs: ["192.0.2.7"], loadBalancerIPs: ["198.51.100.9"]));
        var current = State(Port(Dns, ["10.96.0.10"], ["10.244.1.3:8053"], nodePort: 30053, externalIPs: ["192.0.2.7"], loadBalancerIPs: ["198.51.100.9"]));

        var plan = StaleConntrackPlanner.Plan(previous, current);

        Assert.Equal(
            ["10.96.0.10:53", "192.0.2.7:53", "198.51.100.9:53", "*:30053"],
            plan.Select(d => $"{d.OriginalDestination?.ToString() ?? "*"}:{d.OriginalDestinationPort}"));
        Assert.All(plan, d => Assert.Equal((ConntrackDeletionReason.EndpointRemoved, Ep1, 8053), (d.Reason, d.ReplySource, d.ReplySourcePort)));
    }

    [Fact]
    public void Plan_ExternalIPTakenOff_DeletesThatFrontendWholeAndEndpointFlowsOnlyForTheRest()
    {
        var previous = State(Port(Dns, ["10.96.0.10"], ["10.244.1.2:8053", "10.244.1.3:8053"], externalIPs: ["192.0.2.7"]));
        var current = State(Port(Dns, ["10.96.0.10"], ["10.244.1.3:8053"]));

        var plan = StaleConntrackPlanner.Plan(previous, current);

        Assert.Equal(
            [
                new ConntrackDeletion(Dns, ConntrackDeletionReason.FrontendRemoved, Protocol.UDP, IpFamily.IPv4, IPAddress.Parse("192.0.2.7"), 53),
                new ConntrackDeletion(Dns, ConntrackDeletionReason.EndpointRemoved, Protocol.UDP, IpFamily.IPv4, Vip, 53, Ep1, 8053),
            ],
            plan);
    }

    [Fact]
    public void Plan_ServicePortNumberChanged_DeletesOldFrontendWhole()
    {
        var previous = State(Port(Dns, ["10.96.0.10"], ["10.244.1.2:8053"], port: 53));
        var current = State(Port(Dns, ["10.96.0.10"], ["10.244.1.2:8053"], port: 5353));

        var deletion = Assert.Single(StaleConntrackPlanner.Plan(previous, current));

        Assert.Equal(new ConntrackDeletion(Dns, ConntrackDeletionReason.FrontendRemoved, Protocol.UDP, IpFamily.IPv4, Vip, 53), deletion);
    }

    [Fact]
    public void Plan_Ipv6EndpointRemoved_UsesIpv6Family()
    {
        var previous = State(Port(Dns, ["fd00:10:96::10"], ["[fd00:10:244:1::2]:8053", "[fd00:10:244:1::3]:8053"], nodePort: 30053));
        var current = State(Port(Dns, ["fd00:10:96::10"], ["[fd00:10:244:1::3]:8053"], nodePort: 30053));

        var plan = StaleConntrackPlanner.Plan(previous, current);

        Assert.Equal(2, plan.Count);
        Assert.All(plan, d => Assert.Equal(IpFamily.IPv6, d.Family));
        Assert.Equal(IPAddress.Parse("fd00:10:96::10"), plan[0].OriginalDestination);
        Assert.Null(plan[1].OriginalDestination);
        Assert.All(plan, d => Assert.Equal(IPAddress.Parse("fd00:10:244:1::2"), d.ReplySource));
    }

    [Fact]
    public void Plan_DualStack_MatchesEndpointsOnlyWithFrontendsOfTheirFamily()
    {
        var previous = State(Port(Dns, ["10.96.0.10", "fd00:10:96::10"], ["10.244.1.2:8053", "[fd00:10:244:1::2]:8053"], nodePort: 30053));
        var current = State(Port(Dns, ["10.96.0.10", "fd00:10:96::10"], [], nodePort: 30053));

        var plan = StaleConntrackPlanner.Plan(previous, current);

        Assert.Equal(
            [
                "IPv4 10.96.0.10:53 <- 10.244.1.2",
                "IPv4 *:30053 <- 10.244.1.2",
                "IPv6 fd00:10:96::10:53 <- fd00:10:244:1::2",
                "IPv6 *:30053 <- fd00:10:244:1::2",
            ],
            plan.Select(d => $"{d.Family} {d.OriginalDestination?.ToString() ?? "*"}:{d.OriginalDestinationPort} <- {d.ReplySource}"));
    }

    [Fact]
    public void Plan_DualStackSecondFamilyGetsItsFirstEndpoint_DeletesOnlyThatFamilysFrontends()
    {
        var previous = State(Port(Dns, ["10.96.0.10", "fd00:10:96::10"], ["10.244.1.2:8053"], nodePort: 30053));
        var current = State(Port(Dns, ["10.96.0.10", "fd00:10:96::10"], ["10.244.1.2:8053", "[fd00:10:244:1::2]:8053"], nodePort: 30053));

        var plan = StaleConntrackPlanner.Plan(previous, current);

        Assert.Equal(
            [
                new ConntrackDeletion(Dns, ConntrackDeletionReason.ServiceNewlyActive, Protocol.UDP, IpFamily.IPv6, IPAddress.Parse("fd00:10:96::10"), 53),
                new ConntrackDeletion(Dns, ConntrackDeletionReason.ServiceNewlyActive, Protocol.UDP, IpFamily.IPv6, null, 30053),
            ],
            plan);
    }

    [Fact]
    public void Plan_ExternalIPOfAFamilyWithoutClusterIP_IsNoFrontend()
    {
        // Data planes program a service only in the families of its cluster IPs.
        var current = State(Port(Dns, ["10.96.0.10"], ["10.244.1.2:8053"], externalIPs: ["2001:db8::7"]));

        var deletion = Assert.Single(StaleConntrackPlanner.Plan(DesiredState.Empty, current));

        Assert.Equal(Vip, deletion.OriginalDestination);
    }

    [Fact]
    public void Plan_EndpointConditionsChangedButStillReachable_PlansNothing()
    {
        var previous = State(Port(Dns, ["10.96.0.10"], ["10.244.1.2:8053"]));
        var current = State(Port(Dns, ["10.96.0.10"], ["10.244.1.2:8053"]));
        var stillServing = new EquatableArray<EndpointInfo>([new EndpointInfo(Ep1, 8053) { Ready = false, Terminating = true }]);
        var terminating = EndpointCategorizer.Decided(current.ServicePorts[Dns].Info, new EndpointSet(stillServing, stillServing, EquatableArray<EndpointInfo>.Empty));

        Assert.Empty(StaleConntrackPlanner.Plan(previous, current));
        Assert.Empty(StaleConntrackPlanner.Plan(previous, State(terminating)));
    }

    [Fact]
    public void Plan_SeveralServices_OrderedByServicePortNameAndRepeatable()
    {
        var a = Name("a-svc");
        var b = Name("b-svc");
        var previous = State(
            Port(b, ["10.96.0.12"], ["10.244.1.2:8053", "10.244.1.3:8053"]),
            Port(a, ["10.96.0.11"], ["10.244.1.3:8053", "10.244.1.2:8053"]));
        var current = State(Port(b, ["10.96.0.12"], []), Port(a, ["10.96.0.11"], []));

        var first = StaleConntrackPlanner.Plan(previous, current);
        var second = StaleConntrackPlanner.Plan(previous, current);

        Assert.Equal(
            ["a-svc 10.244.1.2", "a-svc 10.244.1.3", "b-svc 10.244.1.2", "b-svc 10.244.1.3"],
            first.Select(d => $"{d.ServicePort.Service.Name} {d.ReplySource}"));
        Assert.Equal(first, second);
    }

    [Fact]
    public void Plan_SameFrontendTwice_DeletesItOnce()
    {
        // An external IP equal to the cluster IP (odd, but not rejected by validation) is still one frontend.
        var current = State(Port(Dns, ["10.96.0.10"], ["10.244.1.2:8053"], externalIPs: ["10.96.0.10"]));

        Assert.Single(StaleConntrackPlanner.Plan(DesiredState.Empty, current));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Plan_RandomChanges_ChangedPortsAloneAndTheMergeWalkEqualAPlanOfEveryName(int seed)
    {
        // A partial sync plans its changed ports only, and the whole-state plan walks both sorted maps at once, skipping
        // ports that are the same object: both must equal planning every name of either state, one by one.
        var random = new Random(seed);
        var names = Enumerable.Range(0, 24).Select(i => Name($"svc{i:D2}", (Protocol)(i % 3), i % 4 == 0 ? "" : "dns")).ToArray();
        ServicePortState RandomPort(ServicePortName name)
        {
            var i = Array.IndexOf(names, name) + 1;
            return Port(name,
                random.Next(4) == 0 ? [$"10.96.0.{i}", $"fd00::{i}"] : [$"10.96.0.{i}"],
                [.. Enumerable.Range(0, random.Next(4)).Select(_ => random.Next(4) == 0 ? $"[fd00::1:{random.Next(4) + 1}]:8053" : $"10.244.{i}.{random.Next(4) + 1}:{8053 + random.Next(2)}").Distinct()],
                nodePort: random.Next(3) == 0 ? 30000 + i : 0,
                externalIPs: random.Next(3) == 0 ? [$"203.0.113.{random.Next(3)}"] : null);
        }
        var previous = State([.. names.Where(_ => random.Next(3) > 0).Select(RandomPort)]);
        var planned = 0;
        for (var step = 0; step < 80; step++)
        {
            var ports = previous.ServicePorts.ToBuilder();
            var changed = new HashSet<ServicePortName>();
            if (step % 10 == 9)
            {
                // A full rebuild: every port a new object with the same content (nothing to delete), one really changed.
                foreach (var (name, port) in previous.ServicePorts)
                    ports[name] = new ServicePortState(port.Info, port.IPv4Endpoints, port.IPv6Endpoints, port.IPv4Verdict, port.IPv6Verdict);
                changed.UnionWith(ports.Keys);
            }
            for (var change = 0; change < 1 + random.Next(4); change++)
            {
                var name = names[random.Next(names.Length)];
                changed.Add(name);
                if (ports.ContainsKey(name) && random.Next(3) == 0) ports.Remove(name);
                else ports[name] = RandomPort(name);
            }
            var current = previous with { ServicePorts = ports.ToImmutable() };

            var everyName = StaleConntrackPlanner.Plan(previous, current, previous.ServicePorts.Keys.Union(current.ServicePorts.Keys).ToList());
            Assert.Equal(everyName, StaleConntrackPlanner.Plan(previous, current));
            Assert.Equal(everyName, StaleConntrackPlanner.Plan(previous, current, changed));
            planned += everyName.Count;
            previous = current;
        }
        Assert.True(planned > 20, $"only {planned} deletions over the whole sequence");
    }

    [Fact]
    public void Plan_MapsSortedAnotherWay_SameDeletionsInNameOrder()
    {
        var a = Name("a-svc");
        var b = Name("b-svc");
        var reverse = Comparer<ServicePortName>.Create((x, y) => y.CompareTo(x));
        DesiredState Reversed(DesiredState state) => state with { ServicePorts = state.ServicePorts.WithComparers(reverse) };
        var previous = State(Port(a, ["10.96.0.11"], ["10.244.1.2:8053"]), Port(b, ["10.96.0.12"], ["10.244.1.3:8053"]));
        var current = State(Port(a, ["10.96.0.11"], []), Port(b, ["10.96.0.12"], []));

        var plan = StaleConntrackPlanner.Plan(Reversed(previous), current);

        Assert.Equal(["a-svc 10.244.1.2", "b-svc 10.244.1.3"], plan.Select(d => $"{d.ServicePort.Service.Name} {d.ReplySource}"));
        Assert.Equal(StaleConntrackPlanner.Plan(previous, current), plan);
    }

    [Fact]
    public void ToString_NamesFrontendEndpointAndReason()
    {
        var deletion = new ConntrackDeletion(Dns, ConntrackDeletionReason.EndpointRemoved, Protocol.UDP, IpFamily.IPv6,
            IPAddress.Parse("fd00::10"), 53, IPAddress.Parse("fd00::2"), 8053);

        Assert.Equal("udp [fd00::10]:53 reply-src [fd00::2]:8053 (default/dns:dns, EndpointRemoved)", deletion.ToString());
    }
}

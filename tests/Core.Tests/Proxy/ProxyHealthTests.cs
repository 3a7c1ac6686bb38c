using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Core.Tests.Proxy;

public class ProxyHealthTests
{
    private static readonly DateTimeOffset Start = new(2024, 1, 1, 0, 0, 0, TimeSpan.Zero);
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);
    private static readonly IpFamily[] V4 = [IpFamily.IPv4];
    private static readonly IpFamily[] Both = [IpFamily.IPv4, IpFamily.IPv6];

    [Fact]
    public void Status_NeverUpdated_Unhealthy()
    {
        var health = new ProxyHealth(new ManualTimeProvider(Start), Timeout, V4);

        var status = health.Status();

        Assert.False(status.Healthy);
        Assert.Null(status.LastUpdated);
        Assert.Equal(Start, status.CurrentTime);
    }

    [Fact]
    public void Status_AfterFirstUpdate_Healthy()
    {
        var time = new ManualTimeProvider(Start);
        var health = new ProxyHealth(time, Timeout, V4);
        health.Queued();

        time.Advance(TimeSpan.FromSeconds(1));
        health.Updated(Start + TimeSpan.FromMilliseconds(500));

        Assert.True(health.Status().Healthy);
        Assert.Equal(Start + TimeSpan.FromSeconds(1), health.Status().LastUpdated);
    }

    [Fact]
    public void Status_QueuedChangeOlderThanTimeout_Unhealthy()
    {
        var time = new ManualTimeProvider(Start);
        var health = new ProxyHealth(time, Timeout, V4);
        health.Updated(Start);

        time.Advance(TimeSpan.FromSeconds(10));
        health.Queued();
        time.Advance(Timeout - TimeSpan.FromSeconds(1));
        Assert.True(health.Status().Healthy);

        time.Advance(TimeSpan.FromSeconds(1));
        Assert.False(health.Status().Healthy);
    }

    [Fact]
    public void Status_NoQueuedChange_HealthyLongAfterLastSync()
    {
        var time = new ManualTimeProvider(Start);
        var health = new ProxyHealth(time, Timeout, V4);
        health.Updated(Start);

        time.Advance(Timeout * 10);

        Assert.True(health.Status().Healthy);
    }

    [Fact]
    public void Updated_ChangeQueuedAfterSyncStarted_StillPending()
    {
        var time = new ManualTimeProvider(Start);
        var health = new ProxyHealth(time, Timeout, V4);
        health.Updated(Start);
        var syncStart = time.GetUtcNow();
        time.Advance(TimeSpan.FromSeconds(1));
        health.Queued(); // arrives while the sync runs: not in the kernel yet

        health.Updated(syncStart);
        time.Advance(Timeout);

        Assert.False(health.Status().Healthy);
    }

    [Fact]
    public void Updated_SyncCoveringQueuedChange_HealthyAgain()
    {
        var time = new ManualTimeProvider(Start);
        var health = new ProxyHealth(time, Timeout, V4);
        health.Updated(Start);
        health.Queued();
        time.Advance(Timeout * 2);
        Assert.False(health.Status().Healthy);

        health.Updated(time.GetUtcNow());

        Assert.True(health.Status().Healthy);
    }

    // Per IP family, as kube-proxy keeps lastUpdated and the oldest queued change per proxier.

    [Fact]
    public void Status_BothFamiliesFresh_Healthy()
    {
        var time = new ManualTimeProvider(Start);
        var health = new ProxyHealth(time, Timeout, Both);
        health.Queued();
        time.Advance(TimeSpan.FromSeconds(1));

        health.Updated(Start);
        time.Advance(Timeout * 3);

        var status = health.Status();
        Assert.True(status.Healthy);
        Assert.Equal([new FamilyHealth(IpFamily.IPv4, Start + TimeSpan.FromSeconds(1), true), new FamilyHealth(IpFamily.IPv6, Start + TimeSpan.FromSeconds(1), true)], status.Families);
    }

    [Fact]
    public void Status_OneFamilyStale_UnhealthyAndSaysWhich()
    {
        var time = new ManualTimeProvider(Start);
        var health = new ProxyHealth(time, Timeout, Both);
        health.Updated(Start);
        time.Advance(TimeSpan.FromSeconds(5));
        health.Queued();
        var syncStart = time.GetUtcNow();
        time.Advance(TimeSpan.FromSeconds(1));

        health.Updated(IpFamily.IPv4, syncStart); // ip6tables-restore refused: only IPv4 is programmed
        time.Advance(Timeout - TimeSpan.FromSeconds(2));
        Assert.True(health.Status().Healthy); // positive control: the IPv6 change has not waited too long yet
        time.Advance(TimeSpan.FromSeconds(1));

        var status = health.Status();
        Assert.False(status.Healthy);
        Assert.Equal(new FamilyHealth(IpFamily.IPv4, Start + TimeSpan.FromSeconds(6), true), status.Families[0]);
        Assert.Equal(new FamilyHealth(IpFamily.IPv6, Start, false), status.Families[1]);
        Assert.Equal(Start + TimeSpan.FromSeconds(6), status.LastUpdated); // the newest family update, as kube-proxy's top level
    }

    [Fact]
    public void Status_OneFamilyNeverProgrammed_Unhealthy()
    {
        var time = new ManualTimeProvider(Start);
        var health = new ProxyHealth(time, Timeout, Both);

        health.Updated(IpFamily.IPv6, Start);

        var status = health.Status();
        Assert.False(status.Healthy);
        Assert.Equal([new FamilyHealth(IpFamily.IPv4, null, false), new FamilyHealth(IpFamily.IPv6, Start, true)], status.Families);
    }

    [Fact]
    public void Queued_OneFamily_OnlyThatFamilyWaits()
    {
        var time = new ManualTimeProvider(Start);
        var health = new ProxyHealth(time, Timeout, Both);
        health.Updated(Start);

        health.Queued(IpFamily.IPv6);
        time.Advance(Timeout);

        Assert.Equal([true, false], health.Status().Families.Select(f => f.Healthy));
    }

    [Fact]
    public void FamilyNotServed_IsIgnored()
    {
        var time = new ManualTimeProvider(Start);
        var health = new ProxyHealth(time, Timeout, V4);

        health.Updated(IpFamily.IPv6, Start); // not served: does not make the proxy healthy
        Assert.False(health.Status().Healthy);
        health.Updated(IpFamily.IPv4, Start);
        health.Queued(IpFamily.IPv6); // nor unhealthy
        time.Advance(Timeout * 2);

        var status = health.Status();
        Assert.True(status.Healthy);
        Assert.Equal([IpFamily.IPv4], status.Families.Select(f => f.Family));
        Assert.Equal([IpFamily.IPv4], health.Families);
    }
}

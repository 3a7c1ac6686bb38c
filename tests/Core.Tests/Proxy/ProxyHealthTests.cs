using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Core.Tests.Proxy;

public class ProxyHealthTests
{
    private static readonly DateTimeOffset Start = new(2024, 1, 1, 0, 0, 0, TimeSpan.Zero);
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    [Fact]
    public void Status_NeverUpdated_Unhealthy()
    {
        var health = new ProxyHealth(new ManualTimeProvider(Start), Timeout);

        var status = health.Status();

        Assert.False(status.Healthy);
        Assert.Null(status.LastUpdated);
        Assert.Equal(Start, status.CurrentTime);
    }

    [Fact]
    public void Status_AfterFirstUpdate_Healthy()
    {
        var time = new ManualTimeProvider(Start);
        var health = new ProxyHealth(time, Timeout);
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
        var health = new ProxyHealth(time, Timeout);
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
        var health = new ProxyHealth(time, Timeout);
        health.Updated(Start);

        time.Advance(Timeout * 10);

        Assert.True(health.Status().Healthy);
    }

    [Fact]
    public void Updated_ChangeQueuedAfterSyncStarted_StillPending()
    {
        var time = new ManualTimeProvider(Start);
        var health = new ProxyHealth(time, Timeout);
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
        var health = new ProxyHealth(time, Timeout);
        health.Updated(Start);
        health.Queued();
        time.Advance(Timeout * 2);
        Assert.False(health.Status().Healthy);

        health.Updated(time.GetUtcNow());

        Assert.True(health.Status().Healthy);
    }
}

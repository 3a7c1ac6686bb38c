using System.Text;
using ProxyPlanes.Iptables;

namespace ProxyPlanes.Backends.Iptables.Tests;

/// <summary>RestoreScript keeps every character across its 32 KiB chunk boundaries, however it is read back.</summary>
public sealed class RestoreScriptTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    public async Task MixedText_OverManyChunks_ReadsBackExactly(int seed)
    {
        var random = new Random(seed);
        string[] words = ["-A KUBE-SVC-67NZLRHBNDSAWJRO", " -m comment --comment ", "\"shop/wéb:http\"", "𝄞", "ü", " -j DNAT --to-destination 10.244.1.2:8080", "\n", "x"];
        var script = new RestoreScript();
        var expected = new StringBuilder();
        while (expected.Length < 300_000)
        {
            switch (random.Next(3))
            {
                case 0:
                    var word = words[random.Next(words.Length)];
                    script.Append(word);
                    expected.Append(word);
                    break;
                case 1:
                    var c = random.Next(2) == 0 ? ' ' : 'é';
                    script.Append(c);
                    expected.Append(c);
                    break;
                default:
                    var n = random.Next(-5, 100_000);
                    script.Append(n);
                    expected.Append(n);
                    break;
            }
        }
        var text = expected.ToString();
        Assert.Equal(Encoding.UTF8.GetByteCount(text), script.Length);
        Assert.Equal(text, script.ToString());
        var written = new StringWriter();
        await script.WriteToAsync(written, default);
        Assert.Equal(text, written.ToString());
    }

    [Fact]
    public void MoveFrom_AppendsTheOtherScript_AndEmptiesIt()
    {
        var first = new RestoreScript().Append("*nat\n");
        var rules = new RestoreScript();
        var expected = new StringBuilder("*nat\n");
        for (var i = 0; i < 5_000; i++)
        {
            rules.Append("-A KUBE-SEP-").Append(i).Append(" -j KUBE-MARK-MASQ\n");
            expected.Append("-A KUBE-SEP-").Append(i).Append(" -j KUBE-MARK-MASQ\n");
        }
        first.MoveFrom(rules).Append("COMMIT\n");
        expected.Append("COMMIT\n");
        Assert.Equal(expected.ToString(), first.ToString());
        Assert.True(rules.IsEmpty);
        Assert.Equal("", rules.ToString());
    }
}

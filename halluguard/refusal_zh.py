"""Chinese (Simplified) patterns, prototypes and lead extraction for :mod:`halluguard.refusal`.

The detector class lives in ``refusal.py``; this module only holds what is specific to Chinese. The
design mirrors the English one (judge the lead, regular-expression evidence in log-odds, balanced
prototypes), with two differences that Chinese punctuation forces:

* A Chinese sentence chains clauses with commas where English would use full stops, so an answer
  and its caveat often share one sentence ("欧盟以外每天30元，具体国家的价格我没有资料。"). The lead
  is therefore cut before a clause that opens with a caveat marker (但/不过/至于/其他/具体/如果...)
  once a plain statement precedes it, just as English cuts at ``;``.
* The evidence is read clause by clause: the first clause with *decisive* evidence (a strong
  abstention, or a committed answer: a hedge, a quantity, "不，"...) decides, so that
  "国内流量按每GB 3元计费，国际流量的价格我查不到。" is an answer and "关于携号转网，我没有相关信息。"
  a refusal. Topic clauses and indirect questions ("关于保修能否免费，") commit to nothing. A clause
  that states a fact with a verb such as 支持/包含/可以/需要 and abstains nowhere also decides (an
  answer). A weak abstention ("我不太确定") does not decide on its own: "我不太确定，但应该是1号出账。"
  commits in its next clause, and after a plain statement it is only a caveat. Where no clause is
  decisive, the strongest hits of the whole lead are weighed as in English.

Pattern families were tuned on ``data/refusal_eval/zh.jsonl``; the figures are in that folder's README.
"""

from __future__ import annotations

import re

# ---------------------------------------------------------------- prototypes
# Written for halluguard; zh.jsonl must not share a sentence with them (tests/test_refusal_zh.py).
# Same topics on both sides, one sentence per stance and topic, for the reason given in refusal.py:
# an encoder's similarity follows topic words, so a topic on one side only would drag its answers there.

ABSTENTION_PROTOTYPES: tuple[str, ...] = (
    # price
    "我不知道这个套餐每月多少钱。",
    "手册摘录里没有给出这款套餐的价格。",
    "您问的是哪一档套餐的价格？",
    "最新的资费请向我们的销售人员咨询。",
    # refund
    "这笔钱什么时候能退回来，我说不上来。",
    "文件里没有讲到退款的流程。",
    "您要退的那笔钱是用银行卡还是微信付的？",
    "退款的事情请联系账务部门。",
    # travel / roaming
    "出国用手机怎么收费，我这里没有资料。",
    "上下文中没有列出那个国家的漫游价格。",
    "您准备去哪个国家？",
    "漫游资费可以去官网的出境服务专区查看。",
    # contract
    "提前终止协议要不要付违约金，我没法说。",
    "我拿到的文本里没有描述协议条款。",
    "您的协议是多久之前签的？",
    "销售代表可以向您解释协议内容。",
    # data
    "达到上限后网速会降到多少，我拿不准，材料里也没写。",
    "关于流量额度，没有给出任何信息。",
    "您想问的是限速前还是限速后的网速？",
    "流量使用情况请咨询客户服务中心。",
    # SIM
    "我无法告诉您SIM卡的PIN码。",
    "文档中没有说明那款手机怎么设置eSIM。",
    "您要把SIM卡装进哪部手机？",
    "换卡的事情门店的同事可以为您解答。",
    # modem / broadband
    "那台光猫的具体参数我不掌握。",
    "所给的材料没有涉及光猫的设置方法。",
    "光猫上现在亮着哪几个灯？",
    "断网的问题请打电话给技术支持。",
    # device / warranty
    "维修是否免费，我无法确认。",
    "来源资料里没有那台笔记本的保修条款。",
    "您还留着购物小票吗，是在哪家店买的？",
    "保修申请最好找生产厂家。",
    # invoice / bill
    "发票金额为什么变了，我不清楚。",
    "发票明细不在这些段落里。",
    "能告诉我发票号码是多少吗？",
    "那笔交易应该去问发卡银行。",
    # branch
    "那家门店几点开门我不知道。",
    "文本中没有给出各门店的营业时间。",
    "您打算去哪一家门店？",
    "营业时间请通过官网的门店查询功能了解。",
    # number transfer
    "转网要花多长时间，我查不到。",
    "转网的手续在这份文件中没有写。",
    "您现在用的是哪家的号码？",
    "这个需要问您之前的运营商。",
    # app / account
    "关于重置密码，我什么也没找到。",
    "使用手册里没有介绍那个菜单。",
    "您是在哪台设备上用这个应用的？",
    "我们的服务台可以帮您查询账户情况。",
    # history
    "那件事发生在哪一年，我不知道。",
    "这些段落里没有任何关于这个历史事件的内容。",
    "您说的是哪一个朝代？",
    "这个可以去历史书里找答案。",
    # science / geography
    "两座城市之间有多远，我答不上来。",
    "文本没有给出这种金属的熔点。",
    "您说的是哪一条河？",
    "这个问题请教科学老师会更合适。",
    # generic and terse
    "结果：没有答案。",
    "这方面的信息缺失。",
    "抱歉，这超出了我能帮忙的范围。",
    "您再多说一些细节，我才能回答。",
)

ANSWER_PROTOTYPES: tuple[str, ...] = (
    # price
    "基础套餐每月19元。",
    "不，这个套餐没有开户费。",
    "我觉得这个套餐大约是12元。",
    "月费30元，参加活动还能更便宜。",
    # refund
    "退款会以抵扣的形式出现在您的下一期账单里。",
    "退款不包含运费。",
    "应该五天左右就能到您的账户。",
    "钱会退回到您的银行卡，扣除未结清的使用费。",
    # travel / roaming
    "在加拿大使用手机每天收费20元。",
    "预付费卡不能使用漫游。",
    "我认为土耳其在漫游二区。",
    "在国外发短信每条1元，接收免费。",
    # contract
    "协议期为24个月。",
    "变更协议不会重新计算期限。",
    "可能提前一个月通知就能解约。",
    "随时可以解约，但剩余的手机款需要一次付清。",
    # data
    "每月50GB流量，账户下所有号码共享。",
    "多余的流量不能分给其他号码。",
    "很可能是触发了公平使用规则被限速了。",
    "网速是300Mbps，具体取决于您所在的位置。",
    # SIM
    "手机提示时输入0000即可。",
    "用5G不需要换新卡。",
    "我估计新手机也能直接下载eSIM。",
    "SIM卡两天内寄到，偏远地区会慢一些。",
    # modem / broadband
    "把灰色网线插到标有WAN的接口上。",
    "这台光猫不需要单独的电源适配器。",
    "看起来故障今天上午已经修复了。",
    "光纤套餐送光猫；Mesh扩展器每月另收4元。",
    # device / warranty
    "笔记本电脑保修三十六个月。",
    "一年以后电池就不在保修范围内了。",
    "维修中心大概需要一周左右。",
    "第一年维修免费，但要收取邮寄费用。",
    # invoice / bill
    "发票金额上涨是因为新增了附加业务。",
    "按月分摊的机款不计利息。",
    "多出来的金额看起来是一次性费用。",
    "每月3号自动扣款，扣款失败会收4元手续费。",
    # branch
    "门店周六营业时间是8:30到13:00。",
    "该门店周日不开门。",
    "我记得离您最近的门店在火车站路。",
    "晚上7点关门，夏季改为5点。",
    # number transfer
    "把号码转到我们这里两小时内就能完成。",
    "转网时您的号码照常可以接听电话。",
    "估计明天早上就办好了。",
    "转网免费；完成之前请保持旧卡正常使用。",
    # app / account
    "在登录页点“忘记密码”。",
    "这个应用不会保存您的银行卡信息。",
    "我比较确定这个设置在“隐私”里面。",
    "您可以在应用里重置，链接一小时后失效。",
    # history
    "那场战争在1945年结束。",
    "古罗马人没有使用过火药。",
    "我认为那座寺庙建于公元七世纪。",
    "那座桥1937年通车，前后修了四年。",
    # science / geography
    "尼罗河全长约6650公里。",
    "月球表面没有液态水。",
    "这座山的海拔大概在两千米上下。",
    "铁在1538摄氏度熔化，含碳时会低一些。",
    # generic
    "是的，没错。",
    "不，不是这样的。",
    "居里夫人和丈夫皮埃尔一起发现了钋。",
    "爱迪生并没有发明电话。",
)

# ---------------------------------------------------------------- building blocks

# Things an answer is read from: "资料中未提及", "提供的文档里并没有写".
# (Not 内容 or 参考 alone: "套餐内容没有变化" is an answer.)
_SRC = (r"(?:资料|材料|文档|文件|文本|原文|文中|上下文|语境|段落|片段|知识库|手册|说明书|摘录|检索结果|"
        r"搜索结果|来源|文章|提供的信息|所给信息|已知信息|现有信息|给定信息|信息(?=里|中))")
# Negations that deny a source's content, and the verbs of saying that follow them.
_NEG = r"(?:没有|没|并未|并没有|未曾|不曾|从未|均未|都没有|都没|都未|也没有|也没|也未|尚未|未|无)"
_SAY = (r"(?:提到|提及|提起|提|说明|说|讲到|讲|写明|写到|写|注明|标明|载明|记载|记录|列出|列明|列|给出|给|"
        r"包含|包括|涵盖|涉及|覆盖|介绍|描述|交代|明确|规定|收录|显示|指出|出现|讨论|谈到|回答|提供)")
# What a source or the assistant lacks: "没有相关信息", "缺少可靠的数据". (信息费 is a fee, 记录 is not 记录费.)
_INFO = r"(?:信息(?!费)|资料|数据|记载|记录(?!费)|内容|说明|答案|答复|回复|描述|介绍|依据|消息|资讯|材料|线索|解答|结果|来源)"
_INFO_MOD = (r"(?:任何|相关|具体|可靠|可用|确切|准确|足够|充分|更多|详细|明确|有关|这方面|此类|这类|该|这个|此|"
             r"可以参考|可参考|可依据|可供参考|可以依据|的)*")
# Verbs of knowing, for "我不知道" / "不太清楚".
_KNOW = r"(?:知道|清楚|了解|晓得|掌握|记得|懂|知情|知晓)"
# A third party someone is sent to.
_PARTY = (r"(?:客服|人工|工作人员|营业员|专员|客户经理|经理|顾问|同事|师傅|技术人员|技术支持|售后|厂商|厂家|"
          r"生产商|银行|开户行|发卡行|运营商|物业|管理员|人员|他们|她们|对方|专家|老师|医生|律师|营业厅|柜台|门店|财务|"
          r"机构|部门|中心|网站|平台|公众号|官网|官方|维修点|专人)")
_ASK = r"(?:咨询|询问|问一下|问问|问下|问|请教|了解|核实|确认|查询|查一下|查证)"
# Question words: a clause holding one asks (or names an open question) rather than states.
_Q_RE = re.compile(r"(?:多少|是否|能否|能不能|会不会|要不要|可不可以|有没有|是不是|什么|怎么|怎样|如何|哪|谁|"
                   r"几(?:个|天|号|点|年|月|时)|多久|多长|多大|多高|多远|为什么|为何|与否|吗|呢)")

_NUM = r"(?:\d+(?:[.,]\d+)?|[一二两三四五六七八九十百千万半几]+)"
_UNIT = (r"(?:元|块钱|块|角|毛|分钱|GB|G(?![a-z])|MB|M(?![a-z])|TB|KB|兆|Mbps|Gbps|kbps|个?工作日|天|小时|"
         r"个?钟头|分钟|秒|周|星期|个月|月|年|世纪|号|日|点|公里|千米|米|厘米|毫米|度|摄氏度|℃|%|折|岁|次|条|张|"
         r"台|位|人|个|公斤|千克|克|倍)")
# A quantity that is stated, not a modifier ("59元套餐", "1954年那届", "30元的那个"), nor "5G" or "一点".
_QUANTITY = (r"(?<![哪几\dA-Za-z.])(?!一点|一下|一些|[2-6]G(?!B))" + _NUM + r"\s?" + _UNIT +
             r"(?!的(?=[^，,。！？!?\s])|套餐|卡|包|档|会员|那|这|版|款|型|网络|信号|手机|[A-Za-z0-9])")

# Evidence that a clause abstains: (pattern, weight in log-odds). 4.5 and 4.0 decide a clause; 3.0 (an
# uncertainty, "我不太清楚") does not, so "我不太清楚，但大概是10GB" is still an answer.
_ABSTAIN_PATTERNS: tuple[tuple[str, float], ...] = (
    # does not know (the subject is often left out; "您不知道密码的话..." is an instruction)
    (r"(?<![您你他她它得看听])(?:也|都|还|真的?|实在|确实|并|暂时|目前|完全|根本)*(?:不|没)" + _KNOW, 4.5),
    (r"(?<![您你他她它得看听])(?:不|没)(?:太|大|是很|是太|怎么|是特别|很|是十分)(?:知道|清楚|了解|晓得|掌握|确定|熟悉)",
     3.0),
    (r"(?:记不清|记不太清|记不起|想不起|不记得|^\W*不知\W*$)", 4.0),
    (r"(?:一无所知|毫不知情|不得而知|无所知)", 4.5),
    (r"(?:答|回答|帮|查|找|搜|查询|检索|看|说)(?:不上来|不上(?!网)|不了|不出来?|不到)", 4.5),
    (r"(?:无法|没法|没办法|没有办法|不能|不能够|难以|无从|不便|未能|没能|无力|不好|不可|暂时无法|恕难)"
     r"(?:为您|给您|向您|帮您|替您|跟您)?(?:从[^，,。]{0,10}?)?"
     r"(?:准确|确切|具体|明确|直接|完整|马上|立即)?地?(?:回答|解答|作答|答复|回复|确定|确认|判断|得知|知晓|知道|知|"
     r"告诉|告知|提供" + _INFO_MOD + _INFO + r"|提供(?:价格|费用|时间)|给出|查到|查询|找到|获取|获得|核实|核对|断定|"
     r"推断|得出|说清|说|讲|透露|查证|答)", 4.5),
    (r"不足以(?:判断|回答|确定|得出|说明|下结论|给出)", 4.5),
    (r"不是我(?:能|可以|所能|能够)(?:回答|解答|确定|判断|知道|了解)", 4.0),
    (r"(?:难说|难讲|不好讲)", 3.5),
    # nothing found / nothing held
    (r"(?:没有|没|无|暂无|并无|尚无|缺少|缺乏|欠缺|找不到|查不到|查无)" + _INFO_MOD + _INFO, 4.5),
    (r"(?:没有|暂无|并无|尚无|找不到|查不到)[^，,。]{1,6}?的(?:信息|资料|数据|说明|答案|资讯)", 4.0),
    (r"(?:没有|没|无|暂无|并无|尚无|缺少|缺乏|欠缺|找不到|查不到)(?:任何)?(?:关于|有关|涉及)[^，,。]{0,30}?的" + _INFO_MOD + _INFO,
     4.5),
    (r"我(?:这边|这里|手上|手头|目前|暂时|现在|这儿)?[^，,。]{0,4}?(?:没有|没|并没有|无)[^，,。]{0,30}?(?:信息|资料|"
     r"数据|记录|答案|依据|消息|资讯|材料|权限|可以参考)", 4.5),
    (r"(?:信息|资料|数据|答案|记录|说明)[^，,。]{0,8}?(?:也|都)?(?:没有|暂无)\W*$", 4.0),
    (r"(?:没有|没|未能|没能|未)(?:在[^，,。]{0,12}?)?(?:查到|找到|查询到|搜到|检索到|看到|发现)", 4.5),
    (r"(?:查无此|并无此|无此)", 4.5),
    (r"(?:信息|资料|数据|依据|材料|内容|条件)(?:不足|不够|有限|缺失|欠缺|不全|不完整)", 4.5),
    # the sources do not hold it
    # ("资料显示未成年人不能办理", "资料显示无需预约": what follows a verb of saying is the content, not a denial)
    (_SRC + r"(?:(?!显示|说|写|表明|规定|指出|提到|称|表示)[^，,。！？!?]){0,4}?" + _NEG + r"(?![需须法])", 4.5),
    (_SRC + r"[^。！？!?]{0,30}?" + _NEG + _SAY, 4.5),
    (r"(?:没有|没|未|并未)(?:在|于)[^，,。]{0,6}?" + _SRC, 4.5),
    (_NEG + r"(?:提到|提及|说明|写明|注明|标明|载明|记载|列出|列明|给出|涉及|交代|明确说明|"
     r"提供(?=\W*$|(?:相关|任何|具体|该|此|这方面)?的?(?:信息|资料|数据|答案|说明|细节|内容)))", 4.0),
    (r"(?:没|未)(?:提|说|写|讲)(?![^，,。]{0,3}(?:费|钱))", 3.5),
    (r"不在[^，,。]{0,6}?" + _SRC, 4.5),
    (_SRC + r"[^，,。]{0,8}?(?:只|仅|只是|仅仅)(?:有|提到|提及|涉及|包含|包括|介绍|说明|列出|列了|讲了|讲|覆盖|涵盖|谈到|"
     r"写了|描述)", 3.5),
    (r"(?:超出|超过|超越)了?[^，,。]{0,12}?范围", 4.0),
    (r"不在[^，,。]{0,10}?(?:知识|能力|服务|回答|查询|所知|了解|掌握)的?范围", 4.0),
    (r"(?:无权|没有权限|没权限|超纲)", 4.0),
    (r"(?:没有|没)(?:任何)?(?:头绪|概念)", 4.0),
    # cannot be known / terse phrasings a small policy invents
    (r"未知(?!号码|来电|号|的?来电|风险|网络|设备)|不可知", 4.0),
    (r"(?:不详|不明(?!白|显))", 3.5),
    (r"^\W*(?:答案|回答|答|结果|回复|结论)?\s*[：:]?\s*(?:未知|不详|不明|不知道|不清楚|无|无法回答|无法确定|无法判断|"
     r"暂无|暂缺|缺失|不确定|无答案|N/?A|无可奉告|无解)\W*$", 4.5),
    (r"(?:信息|答案|资料|数据)?暂缺", 4.0),
    (r"(?:无解|无可奉告|爱莫能助|无能为力|帮不上忙)", 4.5),
    (r"问题(?:本身)?(?:无法|不能|没法|难以|不可)", 4.5),
    (r"(?:不敢|不想|不愿|不便|不好)(?:乱说|瞎说|乱猜|瞎猜|妄下结论|随便回答|随意猜测|猜测|误导)|不乱猜|以免误导", 3.5),
    # uncertainty: weak on its own
    (r"(?<![您你他她它])(?:不|没)(?:太|是很|是特别|是|敢|能)?(?:百分之?百|百分百|完全|十分|非常|很)?(?:确定|肯定)|"
     r"(?:不敢|没法|无法)保证|拿不准|说不准|说不好|不好说|吃不准", 3.0),
    (r"恐怕", 1.0),
    # clarification requests
    (r"(?<!吧)[？?]\s*$", 3.5),  # "应该是29元吧？" is a guess, not a question
    (r"(?:吗|哪[^，,。]{0,10}?呢)\W*$", 3.5),
    (r"请问", 3.5),
    (r"(?:能否|能不能|可否|可不可以|是否可以|可以|能|麻烦|劳烦|烦请|请|方便|需要)(?:您|你)?(?:再|先|具体)?(?:提供|告诉|告知|"
     r"说明|确认|补充|描述|说一下|说说|说下|讲一下|讲讲|讲下|发一下|发下|发给|报一下|说得|透露)(?!身份证|证件|原件|复印件|材料)", 4.0),
    (r"(?:您|你)(?:指的|说的|问的|提到的|想问的|想了解的|想要的|要的)?是(?:指)?[^，,。？?]{0,24}?还是", 3.5),
    (r"(?:不太|不是很|没太|没有?)(?:明白|理解|听懂|看懂)(?:您|你)", 4.0),
    (r"我(?:还|先)?(?:需要|得|要|必须|想)(?:先)?(?:知道|了解|确认|清楚|弄清楚|问一下|问清楚|核实)", 3.5),
    (r"才(?:能|好|可以)(?:告诉|回答|判断|确定|帮您|为您|给您)", 3.0),
    (r"想(?:跟您|和您|向您|跟你)?确认一下", 3.0),
    (r"^\W*(?:再)?(?:提供|告诉我|告知|发)一下", 3.5),
    (r"(?:更多|具体|详细|进一步|更具体)的?(?:信息|细节|情况|描述)", 1.5),
    # redirections: "建议您咨询客服", "请到营业厅问问", "银行那边更清楚", "这个得问厂家"
    (r"(?:建议|推荐|最好|不妨|还是|可以|可|请|麻烦|劳烦|烦请|您(?!的)|你(?!的))(?:(?!不|无需|无须|没|别)[^，,。？?]){0,12}?(?:(?:联系|联络|咨询|询问)(?!的)|问一下|问问|问下|"
     r"请教|求助|致电|打电话|查阅|参考|参阅|留言|反馈|反映|投诉|提交工单|"
     r"拨打[^，,。]{0,14}?(?:咨询|询问|问|查询|核实|确认|了解|客服|热线|专线|人工|电话|反映|反馈|投诉)|"
     r"(?:去|到|上|登录|访问)[^，,。]{0,10}?(?:网站|官网|平台|公众号|网上营业厅)[^，,。]{0,4}?(?:查看|查询|看看|了解|查)|"
     r"找[^，,。]{0,12}?" + _PARTY + r"|问[^，,。]{0,6}?" + _PARTY + r"|"
     r"(?:上|访问|登录|到|去|查看|看一下|看看|查一下)(?:我们的)?(?:官网|官方网站)|"
     r"(?:到|去|前往)[^，,。]{0,10}?(?:营业厅|门店|网点)(?=[^，,。]{0,4}" + _ASK + r")|"
     r"向[^，,。]{0,14}?" + _ASK + r")", 3.5),
    (r"(?:这个|这|此|该|这类|这种)?(?:问题|事情|情况)?(?:得|要|需要|应该|还得|只能|最好)(?:您|你)?(?:去|再)?"
     r"(?:问|找|咨询|联系|请教)", 3.5),
    (r"^\W*(?:直接|可以|去|先)?找[^，,。]{0,12}?" + _PARTY, 3.5),
    (r"(?:建议|推荐|最好)(?:您|你)?(?:直接|先|亲自|就近)?(?:前往|到|去)[^，,。]{0,10}?(?:营业厅|门店|网点)", 3.5),
    (r"^\W*(?:或者|或是|或|也可以|也可|再|直接)?(?:联系|联络|咨询|致电|请教)(?!方式|电话|的|费)", 3.5),
    (r"请教(?!的)", 3.0),
    (r"(?:会|才)?(?:比较|更|最)(?:靠谱|稳妥|合适)", 3.0),
    (r"(?:那边|那里|那儿|上面|里面)的?(?:信息|资料|数据|说明)?(?:更|最)(?:全|齐全|详细|准确|清楚|权威)", 3.5),
    (r"(?:会|将)有(?:专人|工作人员|客服|同事|专员)(?:跟进|联系您|处理|回复|解答|答复)", 3.5),
    (r"(?:移步|转到|转至)[^，,。]{0,10}?(?:客服|营业厅|门店|官网|App|APP|人工)", 3.5),
    (_PARTY + r"(?:那边|那里|那儿)?[^，,。]{0,12}?(?:会|能|可以|能够|才能|将|应该能|应该会|更)够?(?:为您|帮您|给您|向您|替您|跟您)?"
     r"(?:解答|回答|答复|查询|查到|核实|确认|解释|告诉|告知|了解|清楚|专业|准确|权威|指导|处理|看看|查一下)", 3.5),
    (r"更(?:准确|详细|专业|权威|全面|可靠|清楚|明确)的?(?:答案|解答|信息|说明|回答|答复|结果)", 3.5),
    (r"(?:可以|能|能够|会)(?:在|从|到)[^，,。]{0,14}?(?:找到|查到|得到|获得|获取)(?:答案|解答|说明|详细信息|具体信息|更多信息)",
     3.5),
    (r"(?:官网|App|APP|说明书|手册)(?:上|里|中)?有(?:详细|具体|完整|更多)的?(?:说明|介绍|信息|解答)", 3.0),
    (r"^\W*(?:具体|详细|最终)?(?:请|建议|还请|麻烦)(?:您)?以[^，,。]{0,16}?为准", 3.5),
    (r"(?:写得|说得|讲得)?更(?:清楚|详细)", 2.0),
    (r"(?:让|请|叫|找)[^，,。]{0,6}?" + _PARTY + r"[^，,。]{0,8}?(?:看看|查查|检查|确认|核实|解答|回答|查一下)", 3.5),
    (r"(?:发|写)(?:封|一封)?(?:邮件|电子邮件)", 3.0),
    (r"(?:属于|归)[^，,。]{0,10}?(?:业务范畴|范畴|管辖|负责|管)", 3.0),
    (r"(?:反馈|转交|转达|提交)给[^，,。]{0,4}?" + _PARTY, 3.0),
    (r"由[^，,。]{0,6}?" + _PARTY + r"[^，,。]{0,6}?(?:来|为您|帮您|给您|跟您|和您|与您|处理|解答|负责|回答|答复|核实|确认|约定|"
     r"决定|安排|判断|检测|评估|确定|通知)", 3.5),
    (r"以[^，,。]{0,16}?为准", 2.0),
)

# Evidence that a clause commits to an answer despite hedges or negations.
_ANSWER_PATTERNS: tuple[tuple[str, float], ...] = (
    (r"^\W*(?:是的|是啊|是|对的|对|没错|正确|不是的|不是|不对|不|没有|没|不会|不用|不需要|不行|不能|可以|能|会|有的|有|"
     r"当然可以|当然|确实|需要|要|支持|不支持|包含|含|免费|收费|已经)\s*[，,。！!]", 3.0),
    # hedges that still commit (not "我觉得您最好问客服", "可能需要您提供...")
    (r"(?:(?:我|个人)[^，,。]{0,3}?(?:觉得|认为|估计|猜|想(?!确认|了解|问|知道|请|先|再|跟|和|向|要|核实)|记得|印象中|理解)|印象中|按我的理解|据我所知|据我了解|"
     r"没记错|按理说|照理说|大概|大约|大致|(?<![预合签节])约(?=为|合|\d|[一二两三四五六七八九十半])|应该|"
     r"(?<![无难法])估计|估摸|(?<!不)可能|也许|或许|好像|似乎|看起来|看样子|多半|八成|差不多|一般来说|通常|"
     r"一般(?:是|在|为|需要|要|会)|多数情况)"
     r"(?![^，,。]{0,8}(?:联系|咨询|问(?!题)|拨打|致电|客服|营业厅|资料|文档|没有提|不知道|不清楚|无法|没法|不确定|您提供|您告诉|"
     r"您确认|您说明|您补充))", 2.5),
    (_NUM + r"\s?" + _UNIT + r"?(?:左右|上下|以内|之内|内)", 2.5),
    (_QUANTITY, 1.5),
    # negated statements: "不收费", "不需要换卡", "没有合约期"
    (r"无需|无须|不必|(?:不|免)(?:收费|收取|收|需要|用|会|支持|包含|包括|含|限|影响|中断|计|扣|算)"
     r"|(?:没有|无)(?:额外|任何)?(?:费用|合约期?|欠费|限制|手续费|利息)|并不是|并非|而是|免费", 2.0),
    # instructions: a how-to answer starts with the action
    (r"^\W*(?:请)?(?:先)?(?:打开|点击|点开|进入|登录|长按|重启|插入|取出|关闭|选择|依次|扫描|扫码|发送|编辑短信|输入|"
     r"把|将)", 1.2),
    # any other figure (a year, a code, a time) is a specific
    (r"\d", 1.0),
)

_ABSTAIN_RE = tuple((re.compile(p, re.IGNORECASE), w) for p, w in _ABSTAIN_PATTERNS)
_ANSWER_RE = tuple((re.compile(p, re.IGNORECASE), w) for p, w in _ANSWER_PATTERNS)
# A clause that states a fact with one of these verbs commits even without a hedge or a figure
# ("eSIM支持iPhone XS及以上机型，安卓的我还没查到。"), provided nothing in it abstains.
_STATEMENT_RE = re.compile(r"(?:支持|包含|包括|含有|收取|收费|免费|享受|享有|适用|生效|到账|有效|能够|需要|属于|位于|"
                           r"(?<![您你])(?:可以|能)(?!否))")

# A clause decides the verdict when its evidence reaches these (an uncertainty, 3.0, does not).
DECISIVE_ABSTAIN = 3.5
DECISIVE_ANSWER = 1.5

# ---------------------------------------------------------------- lead extraction

_FILLER_WORDS = (r"(?:(?:很|非常|十分|实在|真的?很?|真是)?(?:抱歉|不好意思|对不起|遗憾)|遗憾的是|您好|你好|亲爱的(?:用户|客户)?|"
                 r"亲|尊敬的(?:用户|客户)|好的|好|嗯+|呃+|哦+|噢|啊|哈|唔|这个嘛|让我(?:看看|查查|想想|查一下|看一下)|"
                 r"我(?:来)?(?:帮您)?(?:看看|查查|查一下|看一下|查了一下|看了一下|查过了)|稍等|请稍等|明白了?|了解了?|"
                 r"收到了?|好问题|这是个好问题|问得好|谢谢(?:您)?(?:的)?(?:提问|咨询|耐心等待|来电)?|"
                 r"(?:非常|十分)?感谢(?:您)?(?:的)?(?:提问|咨询|来电|耐心等待|耐心|支持|理解)?|(?:给您)?带来(?:的)?不便|"
                 r"(?:让您)?久等了|很高兴为您服务|欢迎咨询|说实话|老实说|坦白说|"
                 r"实话说|说真的|当然|没问题|是这样的|(?:这个|这|您这个)?问题问得(?:很|真|非常)?好|"
                 r"(?:根据|按照|依据|据)(?:现有|目前|已有|您提供|提供|所给|已知|给定|我掌握|我查到|我这边)?的?"
                 r"(?:资料|信息|文档|材料|记录|内容|情况)(?:来看|显示|所示)?|资料显示|经查询|经过查询|查询后)")
_FILLER_RE = re.compile(r"^[\W_]*(?:" + _FILLER_WORDS + r"[啊哈呢哦呀了～~]*[\W_]*)+$")
_SENTENCE_RE = re.compile(r"[^。！？!?…\n]+(?:[。！？!?…]+[”’\"」』）)]*)?|[。！？!?…]+")
_CLAUSE_RE = re.compile(r"[^，,。！？!?]+[，,。！？!?…”’\"」』）)]*|[，,。！？!?]+")
_CLAUSE_CUT_RE = re.compile(r"\s*[；;]\s*")
# A clause opening with one of these adds a caveat to what came before.
_CAVEAT_RE = re.compile(r"^\W*(?:但是?|不过|可是|只是|然而|而|至于|其他|其它|其余|别的|另外|此外|除此之外|除此以外|具体|"
                        r"更早|如果|若|假如|如需|如有|要是|万一|其中)")
_TOPIC_RE = re.compile(r"^\W*(?:关于|对于|至于|有关|针对|就|您问的|您说的|您提到的|您咨询的|你问的)|(?:的话|方面|问题)\W*$")
_CJK_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[A-Za-z0-9]+")
_SHORT_LEAD_UNITS = 4
_MAX_LEAD_CHARS = 200


def _units(text: str) -> int:
    """Ideographs plus runs of Latin letters/digits: the Chinese counterpart of a word count."""
    return len(_CJK_RE.findall(text))


def clauses_of(text: str) -> list[str]:
    """``text`` split after each comma or sentence mark, each clause keeping its punctuation."""
    return [c for c in _CLAUSE_RE.findall(text) if c.strip()]


def _abstains(clause: str) -> bool:
    return any(rx.search(clause) for rx, _ in _ABSTAIN_RE)


def _is_statement(clause: str) -> bool:
    """A clause that states something: no abstention evidence, no question word, not a topic phrase."""
    return not (_abstains(clause) or _Q_RE.search(clause) or _TOPIC_RE.search(clause) or _FILLER_RE.match(clause))


def lead_of(response: str) -> str:
    """The part of a Chinese ``response`` that decides the verdict.

    The first substantive sentence (sentences end at 。！？!?… or a newline): filler sentences and
    leading filler clauses (抱歉，/ 您好！/ 好的，/ 根据资料，...) are skipped, text after ；is left out,
    a lead of fewer than four characters ("不。", "未知。") or ending in a colon takes the next sentence
    along, and a clause that opens a caveat (但/不过/至于/其他/具体/如果...) after a plain statement ends
    the lead.
    """
    sentences = []
    for line in response.splitlines():
        sentences += [s.strip() for s in _SENTENCE_RE.findall(line) if s.strip() and _units(s)]
    while len(sentences) > 1 and _FILLER_RE.match(sentences[0]):
        sentences.pop(0)
    if not sentences:
        return ""
    lead = _CLAUSE_CUT_RE.split(sentences[0])[0]
    parts = clauses_of(lead)
    while len(parts) > 1 and _FILLER_RE.match(parts[0]):
        parts.pop(0)
    lead = "".join(parts).strip()
    if (_units(lead) < _SHORT_LEAD_UNITS or lead.endswith(("：", ":"))) and len(sentences) > 1:
        lead = f"{lead}{sentences[1]}"
    parts = clauses_of(lead)
    for i in range(1, len(parts)):
        if _CAVEAT_RE.match(parts[i]) and any(_is_statement(p) for p in parts[:i]):
            lead = "".join(parts[:i]).rstrip("，, ")
            break
    return lead[:_MAX_LEAD_CHARS]


def _evidence(clause: str) -> tuple[float, float]:
    pos = max((w for rx, w in _ABSTAIN_RE if rx.search(clause)), default=0.0)
    if _TOPIC_RE.search(clause) or _Q_RE.search(clause):
        return pos, 0.0  # a topic or an indirect question ("关于保修能否免费，...") commits to nothing
    neg = max((w for rx, w in _ANSWER_RE if rx.search(clause)), default=0.0)
    return pos, neg


def pattern_logit(lead: str) -> float:
    """Log-odds evidence of a Chinese lead: the first clause with decisive evidence decides (its abstention
    hit minus its answer hit); where none is decisive, the strongest hits of the whole lead are weighed."""
    pos_all = neg_all = 0.0
    stated = False
    for clause in clauses_of(lead):
        pos, neg = _evidence(clause)
        if pos >= DECISIVE_ABSTAIN or neg >= DECISIVE_ANSWER:
            return pos - neg
        if not pos and _is_statement(clause):
            if _STATEMENT_RE.search(clause):
                return -neg
            stated = True
        elif stated:
            pos = 0.0  # a mere uncertainty after a statement is its caveat: "周一到周五都开门，周末我不太清楚"
        pos_all, neg_all = max(pos_all, pos), max(neg_all, neg)
    return pos_all - neg_all

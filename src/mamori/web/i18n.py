"""The console's chrome in Japanese and English.

Templates write ``{{ _("Findings") }}``; the English text is the key, and :data:`JA` gives the
Japanese. The language is, in order: ``?lang=`` (remembered in the session), the account's
setting, the browser's ``Accept-Language`` (every browser sends one), else English (what a script
without the header gets). Data (measure names aside) is shown as stored.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request

__all__ = ["JA", "LANGS", "language", "translator"]

LANGS = ("ja", "en")

JA: dict[str, str] = {
    # menu and chrome
    "Home": "ホーム",
    "Findings": "検知結果",
    "Actions": "措置",
    "Approvals": "承認待ち",
    "Alerts": "注意喚起",
    "Cases": "案件",
    "Mailbox": "送信メール",
    "Search": "検索",
    "Traffic": "トラフィック",
    "Attacks": "攻撃と対処",
    "Audit": "監査",
    "Retention": "保存期間",
    "Users": "アカウント",
    "Metrics": "メトリクス",
    "Account": "アカウント設定",
    "Sign out": "サインアウト",
    "Staff sign in": "職員サインイン",
    "Public notice": "公表事項",
    "Transparency report": "透明性レポート",
    "Trends": "推移",
    # attacks and mitigations (M10, M13)
    "Attacks and mitigations": "攻撃と対処",
    "Attacks found": "検知された攻撃",
    "DDoS, reflection and spoofing findings and the network rules that answered them (M10, M13), with the packets per step sent to each attacked prefix (flow headers read under M13, scaled by sampling). Red: an attack from its start to its detection; green: a rule in force; amber: a rule waiting for approval.": "DDoS・反射攻撃・送信元詐称の検知結果と、それに対処したネットワークのルール（M10・M13）、攻撃を受けたプレフィックスごとの時間刻みのパケット数（M13 のもとで読んだフローのヘッダ情報、サンプリング率で補正）。赤：攻撃の開始から検知まで、緑：実施中のルール、黄：承認待ちのルール。",
    "step": "刻み",
    "flow records": "件のフロー",
    "audit entry": "監査記録",
    "Range": "期間",
    "No attack on a prefix in this range.": "この期間にプレフィックスへの攻撃はありません。",
    "rules": "ルール",
    "Rules": "ルール",
    "Console": "コンソール",
    "Signed in as": "サインイン中",
    "What this role may use": "このロールで使える画面",
    "Measures this role works under": "このロールが扱う措置",
    "measure": "措置",
    "name": "名称",
    "legal basis": "法的根拠",
    # tables
    "Filter": "絞り込み",
    "Search text": "文字列検索",
    "Address or prefix": "アドレスまたはプレフィックス",
    "From": "開始",
    "To": "終了",
    "Rows per page": "表示件数",
    "Clear": "解除",
    "Download CSV": "CSVダウンロード",
    "rows": "件",
    "of": "／",
    "Previous": "前へ",
    "Next": "次へ",
    "all": "すべて",
    "No rows match.": "該当する行はありません。",
    "detected": "検知日時",
    "kind": "種別",
    "endpoint": "エンドポイント",
    "method": "手法",
    "score": "スコア",
    "status": "状態",
    "evidence": "根拠",
    "created": "作成",
    "alert": "注意喚起",
    "subscriber": "契約者",
    "case": "案件",
    "state": "状態",
    "sent": "送信",
    "cause": "原因",
    "attempts": "試行",
    "target": "対象",
    "expires": "期限",
    "start": "開始",
    "end": "終了",
    "approved by": "承認者",
    "proposed by": "提案者",
    "subscribers": "影響契約者数",
    "decide": "判断",
    "received": "受信",
    "to": "宛先",
    "subject": "件名",
    "time": "日時",
    "actor": "実行者",
    "event": "イベント",
    "dataset": "データセット",
    "detail": "詳細",
    "opened": "開始",
    "updated": "更新",
    "assignee": "担当者",
    "notes": "メモ",
    "timeline": "経過",
    # actions
    "Approve": "承認",
    "Reject": "却下",
    "Apply now": "適用",
    "End": "終了",
    "Propose": "提案",
    "False positive": "誤検知",
    "Confirm": "確定",
    "What will change": "変更内容",
    # cases
    "open": "対応中",
    "acknowledged": "受付済",
    "resolved": "解決",
    "escalated": "エスカレーション",
    "closed": "完了",
    "Add a note": "メモを追加",
    "Save": "保存",
    "Assign to": "担当者",
    "Set status": "状態を変更",
    # chrome added with the tables, cases, accounts
    "Alerts to subscribers": "契約者への注意喚起",
    "One row per alert, in its current state. Alerts of subscribers who opted out of a consent-based measure are not shown (governance removes them); their cases stay reachable by number.": "注意喚起ごとに1行、現在の状態を表示します。同意に基づく措置を停止した契約者の注意喚起は表示されません（ガバナンスが除外します）。案件は番号で引き続き参照できます。",
    "Each finding is read under the measure that produced it. Findings name endpoints, never subscribers.": "検知結果は、それを生成した措置のもとで読み出されます。検知結果が示すのは通信先であり、契約者ではありません。",
    "Traffic overview": "トラフィック概況",
    "Drill down": "内訳",
    "Alert e-mails as delivered": "送信された注意喚起メール",
    "One row per case. A case whose subscriber opted out keeps its number, dates and status (marked “withheld”), so the desk can answer a call.": "案件ごとに1行。契約者が停止した案件も、番号・日付・状態は残ります（「非表示」）。電話でのお問い合わせに対応できます。",
    "Audit log": "監査ログ",
    "overview": "概要",
    "log": "ログ",
    "Every entry, newest first. Details are reduced to counts and reasons; addresses are masked.": "全件を新しい順に表示します。詳細は件数と理由に限り、アドレスは伏せ字にします。",
    "Hash chain": "ハッシュチェーン",
    "Every access by measure": "措置ごとのアクセス",
    "Events": "イベント",
    "Refusals": "拒否",
    "Purges": "削除",
    "Console accounts": "コンソールのアカウント",
    "Add an account": "アカウントを追加",
    "Add": "追加",
    "Password": "パスワード",
    "Sign in": "サインイン",
    "One-time code (if your account has one)": "ワンタイムコード（設定している場合）",
    "Subscribers do not need an account:": "契約者の方はアカウント不要です：",
    "your settings": "設定ページ",
    "Wrong name, password or code.": "アカウント名、パスワードまたはコードが違います。",
    "last sign-in": "最終サインイン",
    "password (shown once)": "パスワード（一度だけ表示）",
    "sessions": "セッション",
    "disabled": "無効",
    "active": "有効",
    "locked until": "ロック中：",
    "disable": "無効にする",
    "enable": "有効にする",
    "unlock": "ロック解除",
    "reset": "パスワード再発行",
    "change role": "ロール変更",
    "Change password": "パスワード変更",
    "Current password": "現在のパスワード",
    "New password (12 characters or more)": "新しいパスワード（12文字以上）",
    "Every session of this account ends, this one too.": "このアカウントのすべてのセッションが終了します（この画面も）。",
    "Second factor": "二要素認証",
    "Add this key to your authenticator app, then give the code it shows.": "この鍵を認証アプリに登録し、表示されたコードを入力してください。",
    "Code": "コード",
    "The second factor is on.": "二要素認証は有効です。",
    "The second factor is off.": "二要素認証を無効にしました。",
    "Switch off": "無効にする",
    "Set up a second factor": "二要素認証を設定",
    "Language": "表示言語",
    "the browser's": "ブラウザの設定",
    "The current password is wrong.": "現在のパスワードが違います。",
    "candidate": "未確認",
    "confirmed": "確認済",
    "rejected": "却下",
    "false-positive": "誤検知",
    "proposed": "提案中",
    "approved": "承認済",
    "applied": "実施中",
    "ended": "終了",
    "expired": "期限切れ",
    "id": "ID",
    "Apply": "適用",
    "Actions proposed and waiting for a second person, and approved ones waiting to be put in force. Operators decide on network actions (nftables, FlowSpec, RTBH); analysts and the abuse desk on the others. Nobody approves their own proposal.": "別の担当者の承認を待つ提案中の措置と、実施を待つ承認済の措置です。ネットワーク上の措置（nftables、FlowSpec、RTBH）はオペレータが、その他はアナリストとアビューズ窓口が判断します。自分の提案は承認できません。",
    "For you": "あなたの判断待ち",
    "Nothing waits for you.": "判断待ちはありません。",
    "Waiting for others": "他の担当者の判断待ち",
    "why": "理由",
    "finding": "検知",
    "The subscriber has opted out: their records are no longer processed. The case keeps its number, dates and status only — no communications data, no notes.": "契約者が停止したため、その記録は処理されません。案件には番号・日付・状態のみが残ります（通信データ・メモは表示しません）。",
    "Saved.": "保存しました。",
    "match": "照合",
    "attribution": "契約者の特定",
    "mail": "メール",
    "bounce": "不達",
    "consent": "同意の変更",
    "closure": "完了",
    "assign": "担当",
    "note": "メモ",
    "Counts per day: findings (read under M14), alerts sent and opt-outs (from the audit log). No subscriber, no address.": "1日ごとの件数：検知結果（M14で読み出し）、送信した注意喚起と停止（監査ログから）。契約者やアドレスは含みません。",
    "Findings per day": "1日あたりの検知数",
    "Alerts sent per day": "1日あたりの注意喚起送信数",
    "Opt-outs per day": "1日あたりの停止数",
    "Contacts": "通信の状況",
    "Inside hosts are numbered by how often they made contact; their addresses are not shown.": "内部の機器は通信の多い順に番号で示し、アドレスは表示しません。",
    # errors
    "Page not found": "ページが見つかりません",
    "Not for your role": "このロールでは利用できません",
    "Form expired": "フォームの有効期限切れ",
    "Not done": "実行できませんでした",
    "Refused": "拒否されました",
}


def language(request: Request, account_language: str | None = None) -> str:
    """The language of the page for this request (see the module docstring)."""
    asked = request.query_params.get("lang")
    if asked in LANGS:
        request.session["lang"] = asked
        return asked
    kept = request.session.get("lang")
    if kept in LANGS:
        return str(kept)
    if account_language in LANGS:
        return str(account_language)
    for part in request.headers.get("accept-language", "").split(","):
        tag = part.split(";", 1)[0].strip().lower()
        if tag.startswith("en"):
            return "en"
        if tag.startswith("ja"):
            return "ja"
    return "en"


def translator(lang: str) -> Callable[[str], str]:
    if lang == "ja":
        return lambda text: JA.get(text, text)
    return lambda text: text
